#!/usr/bin/env bash
# Several nodes through the deepspeed launcher (passwordless ssh or pdsh to every host in HOSTFILE).
#   launchers/multinode.sh HOSTFILE configs/300m.yaml run.dir=runs/x
# Variables that must reach the workers go in ./.deepspeed_env (one NAME=value per line), DeepSpeed's convention.
# SIGTERM/SIGINT go to DeepSpeed's runner, which stops the remote ranks (pdsh); a one-host hostfile runs locally
# and then behaves as launchers/local.sh (checkpoint and exit).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[[ $# -ge 2 ]] || die "usage: launchers/multinode.sh HOSTFILE CONFIG.yaml [key=value ...]"
hostfile="$1"; shift
summary="$(python -m megarecipe.cli.check_hostfile "$hostfile")" || exit 2
[[ "$summary" =~ ([0-9]+)\ node\(s\),\ ([0-9]+)\ process ]] || die "hostfile $hostfile: could not count its processes ($summary)"
nodes="${BASH_REMATCH[1]}" nproc="${BASH_REMATCH[2]}"
if (( nodes > 1 )); then   # pdsh hands the arguments to each host's shell unquoted: $(...), ; or ' would act there
  for arg in "$@"; do
    [[ "$arg" =~ ^[A-Za-z0-9_@%+=:,./\ -]*$ ]] || die "argument '$arg': DeepSpeed passes it to a shell on every host \
unquoted; use only letters, digits, spaces and _@%+=:,./- (e.g. rename the run.dir)"
  done
fi
python -m megarecipe.cli.check_config --world-size "$nproc" "$@"
args=(--hostfile "$hostfile" --log_level warning)
[[ -n "${MASTER_ADDR:-}" ]] && args+=(--master_addr "$MASTER_ADDR")
[[ -n "${MASTER_PORT:-}" ]] && args+=(--master_port "$MASTER_PORT")
run_forwarding deepspeed "${args[@]}" --module megarecipe.cli.train "$@"
