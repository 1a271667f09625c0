"""`totesys-dev`: `dagster dev` on a persistent, fast instance, with nothing to configure.

Without DAGSTER_HOME, `dagster dev` keeps its runs in a temporary SQLite instance that is gone
after a restart and records a history backfill's thousands of partition events slowly. This
wrapper sets DAGSTER_HOME to `$TOTESYS_HOME/dagster_home` (unless set), writes a dagster.yaml
there whose storage is the embedded PostgreSQL's `dagster` database with the pooled event log
(`totesys_assets.instance_storage`), then runs `dagster dev` with the arguments given.
A dagster.yaml that this wrapper did not write is left alone.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from totesys_assets.settings import totesys_home

MARKER = "# written by totesys-dev"

INSTANCE_YAML = """{marker}: the quick start's Dagster instance. Delete this line to keep your edits.
# Storage: the embedded PostgreSQL's `dagster` database; reset with `make reset`.
run_storage:
  module: dagster_postgres.run_storage
  class: PostgresRunStorage
  config: &storage_db
    postgres_url: "{url}"
event_log_storage:
  module: totesys_assets.instance_storage
  class: PooledPostgresEventLogStorage
  config: *storage_db
schedule_storage:
  module: dagster_postgres.schedule_storage
  class: PostgresScheduleStorage
  config: *storage_db
# The daemon checks the run queue every second (Dagster's default is 5): a change sensor's run
# starts at once.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  pools:
    # One extraction and one warehouse load at a time, as in deploy/dagster.yaml.
    default_limit: 1
    granularity: op
run_monitoring:
  enabled: true
telemetry:
  enabled: false
nux:
  enabled: false
"""


def dagster_home() -> Path:
    home = os.environ.get("DAGSTER_HOME", "").strip()
    return Path(home).resolve() if home else totesys_home() / "dagster_home"


def ensure_instance(home: Path) -> Path:
    """Write the quick start's dagster.yaml into `home` unless the user keeps their own there."""
    from totesys_assets import embedded

    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if path.exists() and not path.read_text().startswith(MARKER):
        return path
    text = INSTANCE_YAML.format(marker=MARKER, url=embedded.dagster_storage_url())
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def prepare_embedded() -> None:
    """Start the embedded PostgreSQL and seed the demo source now, before the UI, where it is seen."""
    from totesys_assets import embedded
    from totesys_assets.settings import ENV_SOURCE_URL, ENV_WAREHOUSE_URL, env_or_none

    if env_or_none(ENV_SOURCE_URL) is None:
        print("totesys-dev: embedded demo source ready:", embedded.source_url())
    if env_or_none(ENV_WAREHOUSE_URL) is None:
        print("totesys-dev: embedded warehouse ready:", embedded.warehouse_url())


# Options of `dagster dev` that name the code to load; without one, totesys-dev names it, so it
# works from any directory (not only from the clone, where pyproject's [tool.dagster] names it).
TARGET_OPTIONS = ("-m", "--module-name", "-f", "--python-file", "-w", "--workspace", "--package-name")


def dev_args(args: list[str]) -> list[str]:
    """The `dagster dev` arguments: the user's, with the code location added if they name none."""
    names_target = any(a.split("=")[0] in TARGET_OPTIONS for a in args)
    return ["dev", *args] if names_target else ["dev", "-m", "totesys_assets.definitions", *args]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    prepare_embedded()
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    path = ensure_instance(home)
    print(f"totesys-dev: Dagster instance in {home} ({path.name}); the embedded data in {totesys_home()}")
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    os.execv(dagster, [dagster, *dev_args(args)])


if __name__ == "__main__":
    main()
