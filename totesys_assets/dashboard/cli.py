"""`totesys-dashboard`: `streamlit run` the dashboard on http://127.0.0.1:8501.

Streamlit's own options pass through and win over the defaults, e.g.
`totesys-dashboard --server.port 8502 --server.headless true`. The warehouse is WAREHOUSE_DB_URL,
else the embedded one (as for the code location); TOTESYS_DASHBOARD_REFRESH_S sets the refresh.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

APP = Path(__file__).with_name("app.py")
DEFAULTS = {
    "--server.address": "127.0.0.1",
    "--server.port": "8501",
    "--browser.gatherUsageStats": "false",
    "--client.toolbarMode": "minimal",  # a viewer's app: no "Deploy" or developer menu
}


def streamlit_argv(args: list[str]) -> list[str]:
    """`streamlit run <app> <defaults not overridden> <args>`."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    defaults = [item for name, value in DEFAULTS.items() if name not in given for item in (name, value)]
    return ["streamlit", "run", str(APP), *defaults, *args]


def _warm_up() -> None:
    """Read the warehouse's current state while Streamlit starts (once per process)."""
    try:
        from totesys_assets.dashboard import queries

        queries.shared_warehouse(queries.warehouse_url()).snapshot()
    except Exception:  # noqa: BLE001, S110 - the first page shows and explains any problem
        pass


def main(argv: list[str] | None = None) -> int:
    from streamlit.web import cli as stcli

    threading.Thread(target=_warm_up, name="dashboard-warm-up", daemon=True).start()
    sys.argv = streamlit_argv(list(sys.argv[1:] if argv is None else argv))
    return stcli.main()


if __name__ == "__main__":
    sys.exit(main())
