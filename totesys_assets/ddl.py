"""DDL rendered from the table specs (never hand-written per table).

Identifiers come only from the specs and are quoted with psycopg's `sql.Identifier`; type names
come from the fixed kind mapping in `specs`. Every statement is idempotent (IF NOT EXISTS or
guarded by a catalogue lookup), so running the DDL twice is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg import sql

from totesys_assets.specs import ENUMS, Column, TableSpec


def identifiers(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    """`a, b, c` (or `p.a, p.b, p.c`) with every name quoted."""
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _column_def(col: Column) -> sql.Composable:
    parts: list[sql.Composable] = [sql.Identifier(col.name), sql.SQL(col.pg_type)]
    if col.default:
        parts.append(sql.SQL("DEFAULT " + col.default))
    if not col.nullable:
        parts.append(sql.SQL("NOT NULL"))
    return sql.SQL(" ").join(parts)


def _sequence_name(table: str, column: str) -> str:
    return f"{table}_{column}_seq"


def enum_statements(enum_names: Iterable[str]) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for name in enum_names:
        labels = sql.SQL(", ").join(sql.Literal(v) for v in ENUMS[name])
        out.append(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = {name}) THEN "
                "CREATE TYPE {ident} AS ENUM ({labels}); END IF; END $$"
            ).format(name=sql.Literal(name), ident=sql.Identifier(name), labels=labels)
        )
    return out


def create_table_statements(spec: TableSpec) -> list[sql.Composable]:
    """CREATE TABLE (with its sequences, primary key and unique constraints), no foreign keys."""
    out: list[sql.Composable] = []
    for col in spec.columns:
        if col.default and col.default.startswith("nextval("):
            out.append(
                sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS integer").format(
                    sql.Identifier(_sequence_name(spec.name, col.name))
                )
            )
    items: list[sql.Composable] = [_column_def(c) for c in spec.columns]
    items.append(
        sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier(f"{spec.name}_pkey"), sql.Identifier(spec.primary_key)
        )
    )
    if spec.natural_key:
        items.append(
            sql.SQL("CONSTRAINT {} UNIQUE ({})").format(
                sql.Identifier(f"{spec.name}_version_key"),
                sql.SQL(", ").join(sql.Identifier(c) for c in spec.natural_key),
            )
        )
    out.append(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            sql.Identifier(spec.name), sql.SQL(", ").join(items)
        )
    )
    if spec.natural_key:
        out.append(_capture_columns_migration(spec))
        out.append(_version_time_index_migration(spec))
        out.append(_version_time_index(spec, if_not_exists=True))
    for col in spec.columns:
        if col.default and col.default.startswith("nextval("):
            out.append(
                sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}").format(
                    sql.Identifier(_sequence_name(spec.name, col.name)),
                    sql.Identifier(spec.name),
                    sql.Identifier(col.name),
                )
            )
        if col.unique:
            out.append(
                sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(f"{spec.name}_{col.name}_key"),
                    sql.Identifier(spec.name),
                    sql.Identifier(col.name),
                )
            )
    return out


def _version_time_index(spec: TableSpec, *, if_not_exists: bool) -> sql.Composable:
    """Facts are loaded, checked and queried by the day of the version (last_updated_date).

    A BRIN index: facts are append-only and stored in version-time order (a first load is sorted
    by it, later loads append newer versions in that order), so a summary per block range finds a
    day's rows, and building it is one scan instead of a sort.
    """
    return sql.SQL("CREATE INDEX {}{} ON {} USING brin ({})").format(
        sql.SQL("IF NOT EXISTS " if if_not_exists else ""),
        sql.Identifier(_version_time_index_name(spec)),
        sql.Identifier(spec.name),
        sql.Identifier(spec.natural_key[1]),
    )


# The values a fact row loaded before versions carried their content hash and capture time gets;
# the lake reads objects of that time with the same values (`resources.lake.codec._legacy_meta`).
LEGACY_VERSION_HASH, LEGACY_CAPTURED_AT = "0", "1970-01-01 00:00:00"


def _capture_columns_migration(spec: TableSpec) -> sql.Composable:
    """Bring a fact created before in-place changes were captured to the current spec: add
    version_hash and captured_at (legacy values for the rows it holds) and widen the version key
    to (id, last_updated date and time, version_hash). A no-op on a current table."""
    if "version_hash" not in spec.natural_key:
        return sql.SQL("SELECT 1")
    key_name = f"{spec.name}_version_key"
    return sql.SQL(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname = {name} AND c.relnamespace = current_schema()::regnamespace AND a.attnum > 0) "
        "AND NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname = {name} AND c.relnamespace = current_schema()::regnamespace "
        "AND a.attname = 'version_hash' AND NOT a.attisdropped) THEN "
        "ALTER TABLE {table} ADD COLUMN version_hash text NOT NULL DEFAULT {hash}, "
        "ADD COLUMN captured_at timestamp(3) without time zone NOT NULL DEFAULT {captured}; "
        "ALTER TABLE {table} ALTER COLUMN version_hash DROP DEFAULT, ALTER COLUMN captured_at DROP DEFAULT; "
        "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {key}; "
        "ALTER TABLE {table} ADD CONSTRAINT {key} UNIQUE ({cols}); END IF; END $$"
    ).format(
        name=sql.Literal(spec.name),
        table=sql.Identifier(spec.name),
        hash=sql.Literal(LEGACY_VERSION_HASH),
        captured=sql.Literal(LEGACY_CAPTURED_AT),
        key=sql.Identifier(key_name),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in spec.natural_key),
    )


def _version_time_index_name(spec: TableSpec) -> str:
    return f"{spec.name}_{spec.natural_key[1]}_idx"


def _version_time_index_migration(spec: TableSpec) -> sql.Composable:
    """Drop the version-time index if it is still the b-tree of earlier versions (re-created next)."""
    name = _version_time_index_name(spec)
    return sql.SQL(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
        "WHERE c.relname = {name} AND c.relkind = 'i' AND am.amname <> 'brin' "
        "AND c.relnamespace = current_schema()::regnamespace) THEN DROP INDEX {ident}; END IF; END $$"
    ).format(name=sql.Literal(name), ident=sql.Identifier(name))


def primary_key_statements(spec: TableSpec) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """(drop, re-create) of a table's primary key, for a first load into an empty fact table.

    Even a serial key that only ever appends costs a b-tree insert per COPY'd row; rebuilt after
    the load it is one sort.
    """
    table = sql.Identifier(spec.name)
    pkey = sql.Identifier(f"{spec.name}_pkey")
    drop: list[sql.Composable] = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, pkey)]
    create: list[sql.Composable] = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            table, pkey, sql.Identifier(spec.primary_key)
        )
    ]
    return drop, create


def version_index_statements(spec: TableSpec) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """(drop, re-create) of a fact's version indexes: the unique natural key and the version time.

    A bulk load drops them and builds them again afterwards: one sort per index instead of a
    random b-tree insert per row.
    """
    version_key = sql.Identifier(f"{spec.name}_version_key")
    table = sql.Identifier(spec.name)
    drop: list[sql.Composable] = [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, version_key),
        sql.SQL("DROP INDEX {}").format(sql.Identifier(_version_time_index_name(spec))),
    ]
    create: list[sql.Composable] = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})").format(
            table, version_key, sql.SQL(", ").join(sql.Identifier(c) for c in spec.natural_key)
        ),
        _version_time_index(spec, if_not_exists=False),
    ]
    return drop, create


def foreign_key_statements(
    spec: TableSpec, *, source_style: bool, referencing: str | None = None
) -> list[sql.Composable]:
    """ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY, each guarded so a re-run is a no-op.

    `source_style` adds the ON UPDATE CASCADE / ON DELETE actions of the real totesys schema;
    `referencing` keeps only the foreign keys to that table.
    """
    out: list[sql.Composable] = []
    for col in spec.foreign_keys:
        if referencing is not None and col.references.split(".")[0] != referencing:  # type: ignore[union-attr]
            continue
        ref_table, ref_col = col.references.split(".")  # type: ignore[union-attr]
        name = f"{spec.name}_{col.name}_fkey"
        actions = sql.SQL(f" ON UPDATE CASCADE ON DELETE {col.on_delete}" if source_style else "")
        out.append(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {name}) THEN "
                "ALTER TABLE {table} ADD CONSTRAINT {ident} FOREIGN KEY ({col}) "
                "REFERENCES {ref_table} ({ref_col}){actions}; END IF; END $$"
            ).format(
                name=sql.Literal(name),
                table=sql.Identifier(spec.name),
                ident=sql.Identifier(name),
                col=sql.Identifier(col.name),
                ref_table=sql.Identifier(ref_table),
                ref_col=sql.Identifier(ref_col),
                actions=actions,
            )
        )
    return out


def schema_statements(specs: Iterable[TableSpec], *, source_style: bool) -> list[sql.Composable]:
    """Every statement to create a whole schema: enums, tables, then foreign keys."""
    specs = list(specs)
    enum_names = sorted({c.enum_type for s in specs for c in s.columns if c.enum_type})
    out = enum_statements(enum_names)
    for spec in specs:
        out.extend(create_table_statements(spec))
    for spec in specs:
        out.extend(foreign_key_statements(spec, source_style=source_style))
    return out
