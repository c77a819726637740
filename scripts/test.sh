#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest inside a private PID namespace, so that a bug in a test
# that signals processes can only ever reach the test's own children.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

"$PY" -m ruff check src tests bench
"$PY" -m mypy
"$(dirname "$PY")/lint-imports" --no-cache  # the layering contracts (pyproject.toml)
if [ "$(id -u)" = 0 ] && unshare --pid --fork --mount-proc true 2>/dev/null; then
    exec unshare --pid --fork --mount-proc "$PY" -m pytest -q "$@"
fi
echo "note: no private PID namespace available (needs root and unshare); running pytest directly" >&2
exec "$PY" -m pytest -q "$@"
