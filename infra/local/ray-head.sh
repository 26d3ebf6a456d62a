#!/usr/bin/env bash
# A single-machine Ray head (dashboard + Jobs API), reachable from this machine only.
#   bash infra/local/ray-head.sh start     # GCS on 127.0.0.1:6379, dashboard + Jobs API on 127.0.0.1:8265
#   bash infra/local/ray-head.sh stop      # ends exactly the processes this script started (never `ray stop`)
#   bash infra/local/ray-head.sh status
# Authentication: Ray (>= 2.52) starts this head with token authentication on. The token is in
# ~/.ray/auth_token (`.venv/bin/ray get-auth-token` prints it); the dashboard asks for it once per
# browser ("Authentication Token Required": paste it there), and `asit submit` sends it for you.
# RAY_AUTH_MODE=disabled turns it off; only do that where nobody else can reach the ports.
# Variables: ASIT_RAY_HOST (default 127.0.0.1; set to this machine's IP to let workers join, and
# only on a trusted network), ASIT_RAY_PORT (6379),
# ASIT_RAY_DASHBOARD_HOST (127.0.0.1), ASIT_RAY_DASHBOARD_PORT (8265), ASIT_RAY_CLIENT_PORT (10001),
# ASIT_RAY_AGENT_PORT (dashboard agent, 52365), ASIT_RAY_TEMP_DIR (Ray's session/log dir; default
# Ray's /tmp/ray), ASIT_RAY_STATE (where the pid and log files go; default ./runs),
# ASIT_RAY_NUM_CPUS, ASIT_RAY_NUM_GPUS, ASIT_RAY_EXTRA_ARGS (more `ray start` flags, space-separated),
# RAY (the ray executable; default .venv/bin/ray, else ray on PATH).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ray_bin="${RAY:-$repo/.venv/bin/ray}"
[[ -x "$ray_bin" ]] || ray_bin="$(command -v ray || true)"
[[ -n "$ray_bin" ]] || { echo "ray-head: no ray executable; run infra/local/bootstrap.sh first" >&2; exit 2; }

host="${ASIT_RAY_HOST:-127.0.0.1}"
port="${ASIT_RAY_PORT:-6379}"
dash_host="${ASIT_RAY_DASHBOARD_HOST:-127.0.0.1}"
dash_port="${ASIT_RAY_DASHBOARD_PORT:-8265}"
state="$(mkdir -p "${ASIT_RAY_STATE:-runs}" && cd "${ASIT_RAY_STATE:-runs}" && pwd)"
pidfile="$state/ray-head-$port.pid"  # keyed by GCS port: several heads can live side by side
logfile="$state/ray-head-$port.log"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "ray-head: already running (pid $(cat "$pidfile"))"; exit 0; fi
    args=(start --head --block
      --node-ip-address "$host" --port "$port"
      --include-dashboard true --dashboard-host "$dash_host" --dashboard-port "$dash_port"
      --ray-client-server-port "${ASIT_RAY_CLIENT_PORT:-10001}"
      --dashboard-agent-listen-port "${ASIT_RAY_AGENT_PORT:-52365}"
      --disable-usage-stats)
    [[ -n "${ASIT_RAY_TEMP_DIR:-}" ]] && args+=(--temp-dir "$ASIT_RAY_TEMP_DIR")
    [[ -n "${ASIT_RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus "$ASIT_RAY_NUM_CPUS")
    [[ -n "${ASIT_RAY_NUM_GPUS:-}" ]] && args+=(--num-gpus "$ASIT_RAY_NUM_GPUS")
    # shellcheck disable=SC2206  # word splitting is the point: a list of flags
    [[ -n "${ASIT_RAY_EXTRA_ARGS:-}" ]] && args+=($ASIT_RAY_EXTRA_ARGS)
    # setsid + --block: the head and everything it spawns form one process group, so `stop` ends
    # exactly them (`ray stop` would end every Ray node this user runs on the machine).
    # The venv's bin first on PATH: job entrypoints (`python -m cli.main ...`) then use its python.
    PATH="$(dirname "$ray_bin"):$PATH" setsid "$ray_bin" "${args[@]}" >"$logfile" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 90); do
      # Any HTTP answer means up: Ray >= 2.52 may answer 401 (token auth; the token is in ~/.ray/auth_token).
      if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$dash_host:$dash_port/api/version" || true)" != "000" ]]; then
        echo "ray-head: dashboard and Jobs API at http://$dash_host:$dash_port (GCS $host:$port, log $logfile)"
        echo "ray-head: submit with  asit submit CONFIG --address http://$dash_host:$dash_port"
        if [[ "${RAY_AUTH_MODE:-token}" != disabled ]]; then
          echo "ray-head: the dashboard asks for the auth token: print it with  $ray_bin get-auth-token  (kept in ~/.ray/auth_token)"
        fi
        exit 0
      fi
      running || { echo "ray-head: failed to start; see $logfile" >&2; tail -n 20 "$logfile" >&2; rm -f "$pidfile"; exit 1; }
      sleep 1
    done
    echo "ray-head: dashboard not answering on http://$dash_host:$dash_port after 90 s; see $logfile" >&2; exit 1
    ;;
  stop)
    if running; then
      pgid="$(cat "$pidfile")"
      # SIGTERM to `ray start --block` first: it shuts its processes down in order. Then whatever is
      # left of the group (slow workers) gets SIGTERM and, 5 s later, SIGKILL.
      kill -TERM "$pgid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pgid" 2>/dev/null || break; sleep 0.5; done
      kill -TERM -- "-$pgid" 2>/dev/null || true
      for _ in $(seq 10); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pgid" 2>/dev/null || true
      echo "ray-head: stopped"
    else
      echo "ray-head: not running"
    fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "ray-head: running (pid $(cat "$pidfile")), Jobs API at http://$dash_host:$dash_port"
    else echo "ray-head: not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
