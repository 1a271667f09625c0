"""The package's layers: every import of a `totesys_assets` module points down (or sideways where
allowed), and no module is longer than `MAX_LINES` unless it is declarative.

The layer table below is the one picture of the package (`docs/architecture.md` is printed from
it: `python -m totesys_assets_tests.test_layers`). Imports are read from the source with `ast`,
inside functions too, without importing anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "totesys_assets"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 400

# Layer number, name, and what it holds. A module may import its own layer and the ones below.
LAYERS: dict[int, tuple[str, str]] = {
    0: ("foundations", "settings, table specs, DDL and partitions rendered from them, small helpers"),
    1: ("resources", "the systems the pipeline talks to, and the embedded demo stand-ins for them"),
    2: ("assets and apps", "raw and star assets with their own conditions and checks; the dashboard"),
    3: ("automation", "jobs, schedules, sensors, alerts"),
    4: ("entry points", "what Dagster or a console script loads by name (definitions, CLIs, storage)"),
}

# First matching prefix (module path relative to the package, dotted) -> (layer, group).
MODULE_LAYERS: dict[str, tuple[int, str]] = {
    "__init__": (0, "foundations"),
    "settings": (0, "foundations"),
    "specs": (0, "foundations"),
    "column_notes": (0, "foundations"),
    "ddl": (0, "foundations"),
    "partitions": (0, "foundations"),
    "pipelining": (0, "foundations"),
    "spooling": (0, "foundations"),
    "resources": (1, "resources"),
    "embedded": (1, "embedded"),
    "simulator.cli": (4, "simulator_cli"),
    "simulator": (1, "simulator"),
    "raw": (2, "raw"),
    "star": (2, "star"),
    "dashboard": (2, "dashboard"),
    "automation": (3, "automation"),
    "definitions": (4, "definitions"),
    "dev": (4, "dev"),
    "instance_storage": (4, "instance_storage"),
}

# Imports between different groups of one layer that are allowed (importer group, imported group).
# The star assets depend on the raw assets (their keys, owners and conditions): star reads raw,
# never the other way. The resources default to the embedded databases, which the simulator seeds.
# The dashboard reads the warehouse with its own SQL: no raw, star or automation.
SIDEWAYS_ALLOWED: set[tuple[str, str]] = {
    ("star", "raw"),
    ("resources", "embedded"),
    ("embedded", "simulator"),
}

# Upward or sideways imports that are known and not fixed yet: (importer, imported) -> why.
EXEMPT_IMPORTS: dict[tuple[str, str], str] = {}

# Declarative modules (tables of specs, notes, static data) may be longer than MAX_LINES.
DECLARATIVE: set[str] = {"specs", "column_notes", "simulator.static_data"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> tuple[int, str] | None:
    for prefix, layer in MODULE_LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def _resolve(dotted: str, known: dict[str, Path]) -> str | None:
    """The package module a dotted name (relative to the package) is, or is inside of."""
    while dotted:
        if dotted in known:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """Every import of a package module in `path` (relative ones resolved, `from x import name`
    counted as the submodule `x.name` when that is a module)."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if module != "__init__" else []
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                absolute = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                absolute = node.module or ""
            targets = [f"{absolute}.{a.name}" for a in node.names]
        for target in targets:
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            resolved = _resolve(target.removeprefix(PACKAGE).lstrip("."), known)
            if resolved is not None and resolved != module:
                found.append(Import(module, resolved, node.lineno))
    return found


def violations() -> list[str]:
    known = modules()
    out: list[str] = []
    for module, path in known.items():
        own = layer_of(module)
        assert own is not None, f"{module} has no layer: add it to MODULE_LAYERS"
        for imp in imports_of(module, path, known):
            other = layer_of(imp.imported)
            assert other is not None, f"{imp.imported} has no layer: add it to MODULE_LAYERS"
            if (imp.importer, imp.imported) in EXEMPT_IMPORTS:
                continue
            where = f"{PACKAGE}/{path.relative_to(ROOT)}:{imp.line}"
            if other[0] > own[0]:
                out.append(
                    f"{where}: {imp.importer} (layer {own[0]}, {LAYERS[own[0]][0]}) imports "
                    f"{imp.imported} (layer {other[0]}, {LAYERS[other[0]][0]}), a higher layer"
                )
            elif other[0] == own[0] and other[1] != own[1] and (own[1], other[1]) not in SIDEWAYS_ALLOWED:
                out.append(
                    f"{where}: {imp.importer} ({own[1]}, layer {own[0]}) imports {imp.imported} "
                    f"({other[1]}, layer {other[0]}) sideways"
                )
    return out


def test_every_import_points_down_or_sideways_where_allowed():
    found = violations()
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_exemptions_are_still_needed():
    known = modules()
    live = {
        (imp.importer, imp.imported)
        for module, path in known.items()
        for imp in imports_of(module, path, known)
    }
    assert not set(EXEMPT_IMPORTS) - live, "exempted imports that no longer exist: remove them"


def test_no_module_is_longer_than_the_limit_unless_declarative():
    long = {
        module: len(path.read_text().splitlines())
        for module, path in modules().items()
        if module not in DECLARATIVE
    }
    over = {module: lines for module, lines in long.items() if lines > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them, or list a declarative one): {over}"


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones():
    known = modules()
    found = {imp.imported for imp in imports_of("resources.source", known["resources.source"], known)}
    assert {"embedded", "resources.errors", "settings", "specs"} <= found


def mermaid() -> str:
    """The layers and the imports between groups, as a Mermaid graph (for docs/architecture.md);
    the imports of the foundations, which every group has, are left out."""
    known = modules()
    edges = sorted(
        {
            (layer_of(imp.importer)[1], layer_of(imp.imported)[1])  # type: ignore[index]
            for module, path in known.items()
            for imp in imports_of(module, path, known)
        }
    )
    lines = ["flowchart TD"]
    for number in sorted(LAYERS, reverse=True):
        name, _ = LAYERS[number]
        groups = sorted({g for layer, g in MODULE_LAYERS.values() if layer == number})
        lines.append(f'  subgraph L{number}["{number}: {name}"]')
        lines.extend(f"    {g}" for g in groups)
        lines.append("  end")
    lines.extend(f"  {a} --> {b}" for a, b in edges if a != b and b != "foundations")
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
