#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install Debian's docker.io when dockerd
# is missing, start dockerd in the background when it is not running, and wait until
# `docker info` answers. Idempotent: a second call with an engine up does nothing.
#
#   bash containers/docker-up.sh          # as root on a fresh Debian/Ubuntu machine (CI)
#
# The engine runs at the lowest CPU priority (nice 19) so image builds and containers, which
# inherit it, never slow down other work on a shared machine. Its log goes to
# ${DOCKERD_LOG:-/var/log/dockerd.log}. Environment: DOCKER_UP_TIMEOUT (seconds to wait for
# the engine, default 90). Prints the engine's version as the last line.
set -euo pipefail

timeout_s="${DOCKER_UP_TIMEOUT:-90}"
log="${DOCKERD_LOG:-/var/log/dockerd.log}"

# Any docker CLI answers `info` (the engine's API is what matters here).
cli="$(command -v docker || true)"
[ -x /usr/bin/docker ] && cli=/usr/bin/docker

answers() { [ -n "$cli" ] && "$cli" info >/dev/null 2>&1; }

if answers; then
  echo "docker-up: engine already answers" >&2
  "$cli" version --format '{{.Server.Version}}'
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != "0" ]; then
    echo "docker-up: dockerd is not installed and this is not root: install docker.io (apt-get install -y docker.io) or start an engine yourself" >&2
    exit 1
  fi
  echo "docker-up: installing Debian's docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: no apparmor/git/xz helpers, just the engine, containerd, runc, iptables.
  if ! nice -n 19 apt-get install -y --no-install-recommends docker.io >&2; then
    nice -n 19 apt-get update >&2
    nice -n 19 apt-get install -y --no-install-recommends docker.io >&2
  fi
  cli=/usr/bin/docker
fi

# dockerd writes its pid here; a live pid means an engine is starting (or stuck): wait for it.
running() { [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; }

if ! running; then
  if [ "$(id -u)" != "0" ]; then
    echo "docker-up: dockerd is not running and this is not root: start it (sudo dockerd) and retry" >&2
    exit 1
  fi
  # A stale pid file from an engine that died would stop the new one from starting.
  rm -f /var/run/docker.pid
  echo "docker-up: starting dockerd (nice 19), log: $log" >&2
  # setsid: the engine outlives this script and the shell that ran it.
  setsid nice -n 19 dockerd >>"$log" 2>&1 < /dev/null &
fi

deadline=$((SECONDS + timeout_s))
until answers; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "docker-up: the engine did not answer within ${timeout_s}s; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
  sleep 1
done
echo "docker-up: engine answers" >&2
"$cli" version --format '{{.Server.Version}}'
