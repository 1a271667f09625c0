"""History: every version of one order or payment the warehouse holds, and what changed."""

import altair as alt
import streamlit as st

from totesys_assets.dashboard import charts, ui
from totesys_assets.dashboard import queries as q

KIND_LABELS = {q.SALES: "Sales order", q.PURCHASES: "Purchase order", q.PAYMENTS: "Payment"}


def _query_param_kind() -> str:
    kind = st.query_params.get("kind", q.SALES)
    return kind if kind in KIND_LABELS else q.SALES


def render(snap: q.Snapshot, f: q.Filters) -> None:
    live = ui.live_warehouse()
    st.caption("The fact tables keep one row per version of a source row; the filters do not apply here.")
    kind = st.radio(
        "What", list(KIND_LABELS), format_func=KIND_LABELS.get, horizontal=True, key="history_kind",
        index=list(KIND_LABELS).index(_query_param_kind()),
    )  # fmt: skip
    recent = live.recent_changes(kind)
    default: int | None = int(recent.get_column("id").to_list()[0]) if recent.height else None
    if "id" in st.query_params and st.query_params.get("kind", kind) == kind:
        try:
            default = int(st.query_params["id"])
        except ValueError:
            pass
    if default is None:
        current = snap.facts[kind]
        newest = current.get_column(q.FACT_SOURCES[kind].natural_id).max()
        default = int(newest) if isinstance(newest, int) else 1  # the newest id, else 1
    left, right = st.columns([1, 2], gap="large")
    with left:
        order_id = st.number_input(
            q.HISTORY_ID_LABEL[kind].capitalize(),
            min_value=1,
            step=1,
            value=int(default),
            key=f"history_id_{kind}",
        )
        st.markdown("**Recently changed** (more than one version, newest first)")
        if recent.height:
            charts.table(recent, "history_recent")
        else:
            st.caption("No changed ones among the newest versions loaded.")
    versions = live.history(kind, int(order_id))
    with right:
        if versions.height == 0:
            st.info(f"The warehouse holds no {KIND_LABELS[kind].lower()} with id {order_id}.")
            return
        st.markdown(f"**{KIND_LABELS[kind]} {order_id}: {versions.height} version(s)**")
        measure = q.HISTORY_MEASURE[kind]
        spec = (
            alt.Chart(charts.chart_data(versions))
            .mark_line(point=True, interpolate="step-after")
            .encode(
                x=alt.X("last_updated:T", title="version time (last_updated)"),
                y=alt.Y(f"{measure}:Q", title=measure, scale=alt.Scale(zero=False)),
                tooltip=["version:Q", "last_updated:T", f"{measure}:Q", "changes:N"],
            )
            .properties(height=220)
        )
        charts.chart(spec)
    charts.table(versions, "history_versions")
