"""The source resource's extract against a real PostgreSQL: the window and how it is read."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import psycopg
import pytest

from totesys_assets.resources.source import SourceError, TotesysSource, extract_query
from totesys_assets.specs import SOURCE_TABLES


def test_extract_takes_exactly_the_window_and_streams_without_parameters(pg):
    from totesys_assets.simulator import Simulator

    url = pg.new_db("extract_window")
    Simulator(url).create_schema()  # the real schema, no rows
    start, end = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO currency (currency_id, currency_code, created_at, last_updated) VALUES "
            "(1, 'GBP', '2024-01-01', '2024-01-01 23:59:59.999'), "  # just before the window
            "(2, 'USD', '2024-01-01', '2024-01-02 00:00:00'), "  # its first instant
            "(3, 'EUR', '2024-01-01', '2024-01-02 23:59:59.999'), "  # its last millisecond
            "(4, 'JPY', '2024-01-01', '2024-01-03 00:00:00')"  # the next window's first instant
        )
    frame = TotesysSource(url=url).extract(SOURCE_TABLES["currency"], start, end)
    assert frame["currency_id"].sort().to_list() == [2, 3]
    # the table's columns and the source's hash of each row's content (its version identity)
    assert frame.schema == {**SOURCE_TABLES["currency"].polars_schema, "_row_hash": pl.Int64()}
    assert frame["_row_hash"].n_unique() == 2
    # The bounds travel as bound settings, so the SELECT has no parameters: ADBC can run it as a
    # binary COPY streamed into Arrow instead of holding libpq's whole result in memory first.
    query = extract_query(SOURCE_TABLES["payment"])
    assert "$" not in query
    # each bound in a scalar subquery: evaluated once per query, not once per scanned row
    assert "(SELECT current_setting('totesys.extract_start')::timestamp)" in query
    assert "(SELECT current_setting('totesys.extract_end')::timestamp)" in query


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///totesys?host={nowhere}&user=totes&password=hunter2%zz",
        "postgresql://totes:hunter2%zz@/totesys?host={nowhere}",
    ],
)
def test_connection_errors_hide_the_password_of_the_user_info_or_the_query_string(tmp_path, url):
    """libpq quotes a malformed password back in its error; neither that nor the URL shows it."""
    url = url.format(nowhere=tmp_path / "nowhere")
    with pytest.raises(SourceError) as raised, TotesysSource(url=url).connect():
        pass
    message = str(raised.value)
    assert message.startswith("cannot connect to the totesys source at postgresql://")
    assert 'invalid percent-encoded token: "***"' in message
    assert "hunter2" not in message
