#!/usr/bin/env bash
# Static security scan of deploy/terraform with checkov, offline.
#
# checkov lives in its own virtualenv (its pins clash with Dagster's): CHECKOV_VENV, default
# deploy/terraform/.venv-checkov (git-ignored; hidden, so checkov does not scan it), created on
# first use and reused after. Every finding is
# fixed or skipped beside its resource with `#checkov:skip=CKV_…:reason`; this script passes no
# skip of its own.
#
#   bash deploy/terraform/scan.sh            # from anywhere; exit code 0 = no failed check
#   CHECKOV_VENV=/tmp/ckv bash deploy/terraform/scan.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="${CHECKOV_VENV:-$here/.venv-checkov}"
version="3.3.30"

if [ ! -x "$venv/bin/checkov" ] || [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$version" ]; then
    echo "scan.sh: installing checkov $version into $venv" >&2
    python3 -m venv "$venv"
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$version" \
        >"$venv/pip-install.log" 2>&1; then
        cat "$venv/pip-install.log" >&2
        exit 1
    fi
fi

# Offline: no platform API key, no download of policies or guidelines (--skip-download,
# BC_SKIP_MAPPING), no PyPI update check (CKV_SKIP_PACKAGE_UPDATE_CHECK), no external modules.
unset BC_API_KEY PRISMA_API_URL || true
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

exec "$venv/bin/checkov" \
    --directory "$here" \
    --framework terraform \
    --skip-download \
    --download-external-modules false \
    --compact \
    --quiet \
    "$@"
