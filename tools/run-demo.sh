#!/usr/bin/env bash
# The main job: an end-to-end demonstration on embedded defaults.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$TP_ROOT"
exec "$TP_VENV/bin/python" tools/demo.py "$@"
