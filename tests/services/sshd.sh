#!/usr/bin/env bash
# Two ssh "nodes" on this machine, for the multi-node launcher tests (tests/distributed/conftest.py starts them).
#   tests/services/sshd.sh start DIR   # install openssh-server + pdsh if missing (root only), start an sshd of
#                                      # its own on a free 127.0.0.1 port; prints DIR/bin (put it first on PATH)
#   tests/services/sshd.sh stop DIR    # stop exactly the sshd `start DIR` started (its pid file)
# DIR holds everything: host and user keys, sshd_config, an ssh_config in which node-a and node-b are that
# sshd, and DIR/bin/ssh, which runs ssh with that config (DeepSpeed's runner and pdsh both call plain `ssh`).
# Nothing outside DIR is touched but the packages and /run/sshd (sshd's own empty dir, made if missing).
# Exit 3 with one line when this machine cannot run it (not root, no apt-get, sshd does not start).
set -euo pipefail
cmd="${1:-}" dir="${2:-}"
[[ "$cmd" =~ ^(start|stop)$ && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
cant() { echo "cannot run a local sshd: $*" >&2; exit 3; }

stop() {
  [[ -f "$dir/sshd.pid" ]] || return 0
  local pid
  pid="$(cat "$dir/sshd.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/sshd.pid"
}
if [[ "$cmd" == stop ]]; then stop; exit 0; fi

[[ "$(id -u)" == 0 ]] || cant "sshd logs users in only as root; this is uid $(id -u)"
if [[ ! -x /usr/sbin/sshd ]] || ! command -v pdsh >/dev/null; then
  command -v apt-get >/dev/null || cant "openssh-server and pdsh are not installed and there is no apt-get"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      openssh-server openssh-client pdsh; } >"$dir.apt.log" 2>&1 \
    || cant "apt-get install openssh-server pdsh failed (see $dir.apt.log)"
fi

mkdir -p "$dir/bin"
chmod 700 "$dir"
rm -f "$dir"/host_key* "$dir"/id_key*
ssh-keygen -q -t ed25519 -N "" -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$dir/id_key"
cp "$dir/id_key.pub" "$dir/authorized_keys"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
CONF
cat >"$dir/ssh_config" <<CONF
Host node-a node-b
  HostName 127.0.0.1
  Port $port
  User $(id -un)
  IdentityFile $dir/id_key
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking accept-new
  LogLevel ERROR
CONF
printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$dir/ssh_config" >"$dir/bin/ssh"
chmod +x "$dir/bin/ssh"

mkdir -p /run/sshd
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" || cant "sshd did not start (see $dir/sshd.log)"
for _ in $(seq 50); do
  if "$dir/bin/ssh" -o BatchMode=yes node-b true 2>/dev/null && "$dir/bin/ssh" -o BatchMode=yes node-a true; then
    echo "$dir/bin"; exit 0
  fi
  sleep 0.2
done
stop
cant "ssh to node-a did not answer within 10 s (see $dir/sshd.log)"
