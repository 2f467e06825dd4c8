#!/usr/bin/env bash
# Create .venv at the repository root, install the package with the example project's
# extras, the repository's test bed (testbed/, development only) and an app server,
# then run example_project/run.py with the given arguments (default: check).
# Example: bash example_project/bootstrap.sh demo --compare
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root[psycopg,environ]" -e "$root/testbed" "gunicorn>=22" "uvicorn>=0.30"
if [ "$#" -eq 0 ]; then
    set -- check
fi
exec "$venv/bin/python" "$here/run.py" "$@"
