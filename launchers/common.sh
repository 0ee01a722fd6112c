# Sourced by the launchers: the project's Python and DeepSpeed, whichever environment runs them.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$here/.venv/bin/python" && -z "${VIRTUAL_ENV:-}" ]]; then
  PATH="$here/.venv/bin:$PATH"
fi
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
die() { echo "error: $*" >&2; exit 2; }
