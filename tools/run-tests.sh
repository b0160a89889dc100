#!/usr/bin/env bash
# Run the whole test suite (unit + functional with real swtpm TPMs).
# Extra arguments go to pytest, e.g. tools/run-tests.sh tests/unit -k quote
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$TP_ROOT"
"$TP_ROOT/tools/services.sh"
exec "$TP_VENV/bin/python" -m pytest -q "$@"
