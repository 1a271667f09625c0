#!/bin/sh
# One-off, idempotent instance setup; run it before (or as part of) starting the daemon, e.g.
#   sh /opt/dagster/init_instance.sh && dagster-daemon run -w $DAGSTER_HOME/workspace.yaml
# Needs DAGSTER_HOME (with dagster.yaml) and the storage environment variables.
set -eu

# Create or migrate the storage schema (dagster.yaml also auto-creates tables; migrating is what an
# upgrade of the Dagster version needs).
dagster instance migrate

# Pool limits live in the instance database; dagster.yaml can only set pools.default_limit.
dagster instance concurrency set totesys_source "${TOTESYS_SOURCE_POOL_LIMIT:-2}"
dagster instance concurrency set warehouse "${TOTESYS_WAREHOUSE_POOL_LIMIT:-1}"
