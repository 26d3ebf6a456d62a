#!/usr/bin/env bash
# A single-machine Ray head (dashboard + Jobs API), reachable from this machine only.
#   bash infra/local/ray-head.sh start     # GCS on 127.0.0.1:6379, dashboard + Jobs API on 127.0.0.1:8265
#   bash infra/local/ray-head.sh stop      # note: `ray stop` stops every Ray node of this user here
#   bash infra/local/ray-head.sh status
# Variables: ASIT_RAY_HOST (default 127.0.0.1; set to this machine's IP to let workers join, and
# only on a trusted network: Ray has no authentication), ASIT_RAY_PORT (6379),
# ASIT_RAY_DASHBOARD_HOST (127.0.0.1), ASIT_RAY_DASHBOARD_PORT (8265), ASIT_RAY_NUM_CPUS,
# ASIT_RAY_NUM_GPUS, RAY (the ray executable; default .venv/bin/ray, else ray on PATH).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ray_bin="${RAY:-$repo/.venv/bin/ray}"
[[ -x "$ray_bin" ]] || ray_bin="$(command -v ray || true)"
[[ -n "$ray_bin" ]] || { echo "ray-head: no ray executable; run infra/local/bootstrap.sh first" >&2; exit 2; }

host="${ASIT_RAY_HOST:-127.0.0.1}"
dash_host="${ASIT_RAY_DASHBOARD_HOST:-127.0.0.1}"
dash_port="${ASIT_RAY_DASHBOARD_PORT:-8265}"

case "${1:-}" in
  start)
    args=(start --head
      --node-ip-address "$host" --port "${ASIT_RAY_PORT:-6379}"
      --include-dashboard true --dashboard-host "$dash_host" --dashboard-port "$dash_port"
      --disable-usage-stats)
    [[ -n "${ASIT_RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus "$ASIT_RAY_NUM_CPUS")
    [[ -n "${ASIT_RAY_NUM_GPUS:-}" ]] && args+=(--num-gpus "$ASIT_RAY_NUM_GPUS")
    "$ray_bin" "${args[@]}"
    echo "ray-head: dashboard and Jobs API at http://$dash_host:$dash_port"
    echo "ray-head: submit with  ray job submit --address http://$dash_host:$dash_port --working-dir . -- asit run CONFIG"
    ;;
  stop)
    "$ray_bin" stop
    ;;
  status)
    "$ray_bin" status --address "$host:${ASIT_RAY_PORT:-6379}"
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
