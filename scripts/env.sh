# Sourced by the other scripts: a virtualenv at .venv with modelseal installed (editable).
# MODELSEAL_EXTRAS=dev installs the test tools too. MODELSEAL_VENV=DIR uses another venv;
# MODELSEAL_NO_INSTALL=1 uses it as it is (one that already runs modelseal, e.g. the test
# suite's own, with PYTHONPATH at this checkout's src): nothing is installed into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELSEAL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
extras="${MODELSEAL_EXTRAS:-}"
spec="$ROOT"; [ -n "$extras" ] && spec="$ROOT[$extras]"
stamp="$VENV/.modelseal-installed-${extras:-base}"
if [ -z "${MODELSEAL_NO_INSTALL:-}" ] && { [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; }; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
