#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests (tests/services/conftest.py starts and stops it).
#   tests/services/slurm.sh start DIR   # install slurm-wlm + munge if missing (root only), start munged,
#                                       # slurmctld, slurmd with every file under DIR; prints DIR/slurm.conf
#   tests/services/slurm.sh stop DIR    # stop exactly the daemons `start DIR` started (their pid files)
# Nothing outside DIR is touched but the packages: its own munge key and socket, free ports, a node with this
# machine's CPUs and memory and 8 GPUs that are /dev/null's twins (so --gpus-per-node is accepted; CPU ranks
# run). Exit 3 with one line when this machine cannot run it (not root, no apt-get, a daemon does not start).
set -euo pipefail
cmd="${1:-}" dir="${2:-}"
[[ "$cmd" =~ ^(start|stop)$ && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
cant() { echo "cannot run a local Slurm: $*" >&2; exit 3; }

stop() {   # slurmd and slurmctld together (each takes seconds to shut down), then munged
  local group f pid pids
  for group in "d ctld" munged; do
    pids=()
    for f in $group; do
      [[ -f "$dir/$f.pid" ]] && pids+=("$(cat "$dir/$f.pid")") && rm -f "$dir/$f.pid"
    done
    (( ${#pids[@]} )) || continue
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
      [[ -z "$pid" ]] && break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  done
}
if [[ "$cmd" == stop ]]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [[ "$(id -u)" == 0 ]] || cant "slurm-wlm and munge are not installed and this is not root"
  command -v apt-get >/dev/null || cant "slurm-wlm and munge are not installed and there is no apt-get"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } >"$dir.apt.log" 2>&1 \
    || cant "apt-get install slurm-wlm munge failed (see $dir.apt.log)"
fi
[[ "$(id -u)" == 0 ]] || cant "slurmd runs jobs as their users only as root; this is uid $(id -u)"

mkdir -p "$dir"/{state,spool,log}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host="$(hostname -s)"
cpus="$(nproc --all)"   # not plain nproc: it follows OMP_NUM_THREADS
mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 8 / 10 ))
cat >"$dir/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/ctld.log
SlurmdLogFile=$dir/log/d.log
SlurmctldPidFile=$dir/ctld.pid
SlurmdPidFile=$dir/d.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0   # start a submitted job within a second, not 3 s later
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=10
MinJobAge=2
DefMemPerCPU=1000
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:8 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
mkdir -p "$dir/dev"   # the 8 "GPUs": character devices like /dev/null, as Slurm wants device files
for i in 0 1 2 3 4 5 6 7; do [[ -e "$dir/dev/gpu$i" ]] || mknod "$dir/dev/gpu$i" c 1 3; done
echo "Name=gpu File=$dir/dev/gpu[0-7]" >"$dir/gres.conf"

dd if=/dev/urandom of="$dir/munge.key" bs=1k count=1 status=none
chmod 400 "$dir/munge.key"
munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed" 2>>"$dir/log/munged.err" \
  || cant "munged did not start (see $dir/log/munged.err)"
export SLURM_CONF="$dir/slurm.conf"
slurmctld || { stop; cant "slurmctld did not start (see $dir/log/ctld.log)"; }
slurmd || { stop; cant "slurmd did not start (see $dir/log/d.log)"; }
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "$SLURM_CONF"; exit 0; fi
  sleep 0.2
done
stop
cant "the node did not come up within 20 s (see $dir/log)"
