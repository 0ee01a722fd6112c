#!/usr/bin/env bash
# Several nodes through the deepspeed launcher (passwordless ssh or pdsh to every host in HOSTFILE).
#   launchers/multinode.sh HOSTFILE configs/300m.yaml run.dir=runs/x
# Variables that must reach the workers go in ./.deepspeed_env (one NAME=value per line), DeepSpeed's convention.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[[ $# -ge 2 ]] || die "usage: launchers/multinode.sh HOSTFILE CONFIG.yaml [key=value ...]"
hostfile="$1"; shift
python -m megarecipe.hostfile "$hostfile" || exit 2
args=(--hostfile "$hostfile")
[[ -n "${MASTER_ADDR:-}" ]] && args+=(--master_addr "$MASTER_ADDR")
[[ -n "${MASTER_PORT:-}" ]] && args+=(--master_port "$MASTER_PORT")
exec deepspeed "${args[@]}" --module megarecipe.cli.train "$@"
