"""Streamlit building blocks shared by the app and its pages: the live snapshot, filters, charts.

Numbers come from `queries` only; this module lays them out. Every page is one fragment that
re-runs itself every TOTESYS_DASHBOARD_REFRESH_S seconds (default 10): it takes the live
warehouse's snapshot (refreshed at most every few seconds, shared by all sessions), draws the
freshness banner, then its charts and tables.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import streamlit as st

from totesys_assets.dashboard import queries as q

# Filter widgets (in the app's sidebar) keep their values in session state under these keys.
DATES, CURRENCIES, COUNTERPARTIES, COUNTRIES = (
    "filter_dates", "filter_currencies", "filter_counterparties", "filter_countries",
)  # fmt: skip
OPTIONS_KEY = "_options_key"


def cache_ttl() -> float:
    """How old a snapshot may be before a page run refreshes it (half the refresh period, 1-5 s)."""
    return max(1.0, min(5.0, q.refresh_seconds() / 2))


def live_warehouse() -> q.LiveWarehouse:
    """The process-wide live warehouse for WAREHOUSE_DB_URL (or the embedded one)."""
    try:
        with st.spinner("Connecting to the warehouse…"):
            url = q.warehouse_url()
    except Exception as exc:  # noqa: BLE001 - the embedded PostgreSQL failed to start: explain it
        raise q.WarehouseUnreachable(f"The embedded warehouse did not start: {exc}") from None
    return q.shared_warehouse(url)


def take_snapshot() -> q.Snapshot:
    live = live_warehouse()
    with st.spinner("Reading the warehouse…"):
        return live.snapshot(max_age_s=cache_ttl())


# -- problems (unreachable, empty) -----------------------------------------------------------------


def show_problem(exc: q.DashboardError) -> None:
    if isinstance(exc, q.WarehouseNotLoaded):  # expected on a first start: not an error
        st.warning(str(exc), icon=":material/inventory_2:")
    else:
        st.error(str(exc), icon=":material/error:")
    if exc.what_to_do:
        st.info(exc.what_to_do, icon=":material/info:")


def show_empty(snap: q.Snapshot) -> None:
    st.warning(
        f"The warehouse at {snap.url} has no facts yet: no sales orders, purchase orders or payments.",
        icon=":material/inventory_2:",
    )
    st.info(q.WarehouseNotLoaded.what_to_do, icon=":material/info:")


def wait_for_data() -> None:
    """Polls (a fragment) and re-runs the whole app once the warehouse answers with facts."""

    @st.fragment(run_every=q.refresh_seconds())
    def poll() -> None:
        try:
            snap = live_warehouse().snapshot(max_age_s=cache_ttl())
        except q.DashboardError:
            snap = None
        st.caption(f"Checking again every {q.refresh_seconds():g} s · last check {q.utc_now():%H:%M:%S} UTC")
        if snap is not None and not snap.is_empty and st.session_state.get("_waiting"):
            st.session_state["_waiting"] = False
            st.rerun()

    st.session_state["_waiting"] = True
    poll()


def open_snapshot() -> q.Snapshot:
    """The snapshot for this run; on an unreachable or empty warehouse, the message, then st.stop()."""
    try:
        snap = take_snapshot()
    except q.DashboardError as exc:
        show_problem(exc)
        wait_for_data()
        st.stop()
    if snap.is_empty:
        show_empty(snap)
        wait_for_data()
        st.stop()
    st.session_state[OPTIONS_KEY] = snap.options_key
    return snap


# -- filters ---------------------------------------------------------------------------------------


def sidebar_filters(snap: q.Snapshot) -> None:
    """The filters every page applies (their values live in session state)."""
    sb = st.sidebar
    sb.header("Filters")
    first, last = q.date_bounds(snap)
    sb.date_input(
        "Date range",
        value=[],
        key=DATES,
        min_value=date(2000, 1, 1),
        max_value=date(2100, 12, 31),
        help=(
            "Empty: all dates. Sales and purchases are dated by the order date, payments by the "
            f"payment date. The data runs from {first} to {last}."
        ),
        format="YYYY-MM-DD",
    )
    codes = snap.dims["currency"].sort("currency_code").get_column("currency_code").to_list()
    sb.multiselect("Currency", codes, key=CURRENCIES, placeholder="All currencies")
    counterparties = snap.dims["counterparty"].sort("counterparty_legal_name")
    names = dict(counterparties.select("counterparty_id", "counterparty_legal_name").iter_rows())
    sb.multiselect(
        "Counterparty",
        list(names),
        format_func=lambda cid: names.get(cid, str(cid)),
        key=COUNTERPARTIES,
        placeholder="All counterparties",
    )
    countries = snap.dims["location"].get_column("country").unique().sort().to_list()
    sb.multiselect(
        "Delivery country",
        countries,
        key=COUNTRIES,
        placeholder="All countries",
        help="Sales and purchases (payments have no delivery location).",
    )
    sb.divider()
    sb.caption(f"Warehouse: `{snap.url}`")
    sb.caption(f"Refreshes by itself every {q.refresh_seconds():g} s. Read-only.")


def filters() -> q.Filters:
    dates = tuple(st.session_state.get(DATES) or ())
    start = dates[0] if len(dates) >= 1 else None
    end = dates[1] if len(dates) >= 2 else None
    return q.Filters(
        start=start,
        end=end,
        currencies=tuple(st.session_state.get(CURRENCIES) or ()),
        counterparties=tuple(int(c) for c in st.session_state.get(COUNTERPARTIES) or ()),
        countries=tuple(st.session_state.get(COUNTRIES) or ()),
    )


def describe_filters(f: q.Filters) -> str:
    parts = []
    if f.start or f.end:
        parts.append(f"{f.start or '…'} to {f.end or '…'}")
    if f.currencies:
        parts.append(", ".join(f.currencies))
    if f.counterparties:
        parts.append(f"{len(f.counterparties)} counterparties")
    if f.countries:
        parts.append(f"{len(f.countries)} countries")
    return "Filtered: " + " · ".join(parts) if parts else "All dates, currencies and counterparties"


# -- the app and its pages --------------------------------------------------------------------------


def app() -> None:
    """The main script: page setup, the snapshot (or why there is none), filters, navigation."""
    st.set_page_config(page_title="Terrific Totes", page_icon=":material/shopping_bag:", layout="wide")
    snapshot = open_snapshot()
    sidebar_filters(snapshot)
    st.navigation(
        [
            st.Page("views/sales.py", title="Sales", icon=":material/sell:", default=True),
            st.Page(
                "views/purchases.py",
                title="Purchases",
                icon=":material/local_shipping:",
                url_path="purchases",
            ),
            st.Page("views/payments.py", title="Payments", icon=":material/payments:", url_path="payments"),
            st.Page("views/history.py", title="History", icon=":material/history:", url_path="history"),
        ],
        position="top",
    ).run()


# -- the page frame --------------------------------------------------------------------------------


def page(title: str, render: Callable[[q.Snapshot, q.Filters], None]) -> None:
    """A page: its title, then a self-refreshing fragment with the banner and `render`."""
    st.title(title)

    @st.fragment(run_every=q.refresh_seconds())
    def body() -> None:
        try:
            snap = take_snapshot()
        except q.DashboardError as exc:
            show_problem(exc)
            return
        if snap.is_empty or snap.options_key != st.session_state.get(OPTIONS_KEY):
            st.rerun()  # new filter choices (or no data any more): redraw the whole app
        freshness_banner(snap)
        render(snap, filters())

    body()


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ts(value: datetime | None) -> str:
    return "—" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def freshness_banner(snap: q.Snapshot) -> None:
    fr = snap.freshness
    now = q.utc_now()
    newest = fr.newest_version
    parts = [f"Newest version in the facts: **{_ts(newest)}**"]
    if newest is not None:
        parts[0] += f" ({_ago(now - newest)} ago)"
    if fr.loaded_at is not None:
        parts.append(f"loaded **{_ts(fr.loaded_at)}** ({_ago(now - fr.loaded_at)} ago)")
    elif not fr.commit_timestamps:
        parts.append("load time not recorded by this PostgreSQL (`track_commit_timestamp` is off)")
    if fr.last_arrival is not None:
        parts.append(f"new rows seen {_ago(now - fr.last_arrival)} ago")
    parts.append(f"checked {fr.checked_at:%H:%M:%S} UTC")
    text = " · ".join(parts)
    if fr.is_stale(now):
        age = fr.age(now)
        quiet = f"for {_ago(age)}" if age is not None else "yet"
        st.warning(
            f"{text}  \nNothing new has reached the warehouse {quiet}: longer than the 30-minute freshness "
            "promise (a source change is in the warehouse within 30 minutes). Fine if the source has been "
            "quiet; otherwise check that the pipeline runs (`totesys-dev` or `dagster dev`; the daemon in a deployment).",
            icon=":material/schedule:",
        )
    else:
        st.success(text, icon=":material/bolt:")
