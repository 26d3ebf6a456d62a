#!/usr/bin/env bash
# An MLflow tracking server (UI + API) over the same store `asit run` writes by default, so runs
# logged without a server show up in it too.
#   bash infra/local/mlflow-server.sh start   # http://127.0.0.1:5000, store under ./runs
#   bash infra/local/mlflow-server.sh stop
#   bash infra/local/mlflow-server.sh status
# Variables: ASIT_MLFLOW_ROOT (runs root holding mlflow.db and mlartifacts/; default ./runs),
# ASIT_MLFLOW_HOST (127.0.0.1; anything else exposes every run to the network, unauthenticated),
# ASIT_MLFLOW_PORT (5000), ASIT_MLFLOW_WORKERS (uvicorn workers, 1), MLFLOW (the mlflow executable; default .venv/bin/mlflow).
# Point jobs at it with `tracking.uri: http://127.0.0.1:5000` in a config, or MLFLOW_TRACKING_URI.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mlflow_bin="${MLFLOW:-$repo/.venv/bin/mlflow}"
root="$(mkdir -p "${ASIT_MLFLOW_ROOT:-runs}" && cd "${ASIT_MLFLOW_ROOT:-runs}" && pwd)"
host="${ASIT_MLFLOW_HOST:-127.0.0.1}"
port="${ASIT_MLFLOW_PORT:-5000}"
pidfile="$root/mlflow-server.pid"
logfile="$root/mlflow-server.log"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "mlflow-server: already running (pid $(cat "$pidfile"))"; exit 0; fi
    [[ -x "$mlflow_bin" ]] || { echo "mlflow-server: no $mlflow_bin; run infra/local/bootstrap.sh first" >&2; exit 2; }
    mkdir -p "$root/mlartifacts"
    # setsid: the server and its workers form one process group, so stop ends exactly them.
    MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}" setsid "$mlflow_bin" server \
      --backend-store-uri "sqlite:///$root/mlflow.db" \
      --artifacts-destination "$root/mlartifacts" \
      --host "$host" --port "$port" --workers "${ASIT_MLFLOW_WORKERS:-1}" >"$logfile" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 60); do  # the first start creates the database schema (a few seconds)
      if curl -fsS "http://$host:$port/health" >/dev/null 2>&1; then
        echo "mlflow-server: http://$host:$port (store $root, log $logfile)"; exit 0
      fi
      running || { echo "mlflow-server: failed to start; see $logfile" >&2; tail -n 20 "$logfile" >&2; rm -f "$pidfile"; exit 1; }
      sleep 1
    done
    echo "mlflow-server: not answering on http://$host:$port after 60 s; see $logfile" >&2; exit 1
    ;;
  stop)
    if running; then kill -- "-$(cat "$pidfile")"; echo "mlflow-server: stopped"; else echo "mlflow-server: not running"; fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "mlflow-server: running (pid $(cat "$pidfile")) at http://$host:$port"; else echo "mlflow-server: not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
