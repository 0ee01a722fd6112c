#!/usr/bin/env bash
# N processes on this machine through the deepspeed launcher (GPUs, or CPU processes over gloo).
#   launchers/local.sh 2 configs/tiny.yaml run.dir=runs/x optim.weight_decay=0.8
# SIGTERM or Ctrl-C (SIGINT) makes every rank finish its step, checkpoint and exit; SIGUSR1 does the same.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[[ $# -ge 2 ]] || die "usage: launchers/local.sh NPROC CONFIG.yaml [key=value ...]"
nproc="$1"; shift
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer, got '$nproc'"
python -m megarecipe.cli.check_config --world-size "$nproc" "$@"
args=(--num_gpus "$nproc" --log_level error)   # 'error': its INFO lines and the no-hostfile warning are noise here
[[ -n "${MASTER_PORT:-}" ]] && args+=(--master_port "$MASTER_PORT")
run_forwarding deepspeed "${args[@]}" --module megarecipe.cli.train "$@"
