# Sourced by the launchers: the project's Python and DeepSpeed, whichever environment runs them.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$here/.venv/bin/python" && -z "${VIRTUAL_ENV:-}" ]]; then
  PATH="$here/.venv/bin:$PATH"
fi
die() { echo "error: $*" >&2; exit 2; }

# Run a launcher in a session of its own and pass TERM, INT and USR1 on to every process in it, then wait
# until all of them are gone; exit with the launcher's status, or 128+N after passing on TERM or INT.
# The launcher and its children start with these signals ignored, so only the processes that handle them act:
# DeepSpeed's per-node launcher (TERM/INT -> TERM to the ranks, which checkpoint and stop, killed after 30 s)
# and the ranks (TERM/USR1). DeepSpeed's runner would otherwise die at once and leave the ranks running.
# MEGARECIPE_OWNER_PID names this script to the ranks: when it is gone (kill -9), or DeepSpeed's runner is, each
# rank sends itself TERM (megarecipe/system.py stop_with_launcher), checkpoints and exits.
run_forwarding() {
  export MEGARECIPE_OWNER_PID=$$
  (trap '' TERM INT USR1; exec setsid "$@") &
  local pid=$! status=0 got="" sig waited=0
  for sig in TERM INT USR1; do
    # shellcheck disable=SC2064   # the trap is meant to expand $sig and $pid now
    trap "got=$sig; kill -s $sig -- -$pid 2>/dev/null || true" "$sig"
  done
  while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || true   # returns early when a signal is trapped
  done
  wait "$pid" || status=$?
  while kill -0 -- "-$pid" 2>/dev/null; do   # anything left of its process group
    if (( waited++ > 400 )); then kill -KILL -- "-$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  trap - TERM INT USR1
  case "$got" in
    TERM) exit 143 ;;
    INT) exit 130 ;;
  esac
  exit "$status"
}
