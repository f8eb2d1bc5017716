#!/usr/bin/env bash
# Create or update .venv with the pinned dependencies and install tesg_ros into it.
# Re-running is fast: pip is skipped while requirements.txt/constraints.txt/setup.py are
# unchanged since the last successful run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TESG_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.tesg-setup-stamp"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
want="$(cat "$root/requirements.txt" "$root/constraints.txt" "$root/setup.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] $venv is up to date"
  exit 0
fi
echo "[setup] installing pinned dependencies into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/requirements.txt" -c "$root/constraints.txt"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  --no-build-isolation -e "$root"
echo "$want" > "$stamp"
echo "[setup] done"
