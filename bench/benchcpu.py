"""Where the cores went during a timed job, and order statistics for a median: what bench_extract's chunked mode
reports beside its wall times.

CPU seconds are read from /proc (psutil) for this driver and its descendants, which with `ray.init(address="local")`
are all of this Ray's processes: raylet, GCS, dashboard and agents ("ray system") and the task workers ("ray
workers", named `ray::...`). Whatever else ran on the machine (other users' jobs) is the load average's share.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

import psutil

ROLES = ("driver", "ray workers", "ray system")


def _role(proc: psutil.Process, me: int) -> str:
    if proc.pid == me:
        return "driver"
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline()[:2])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ray system"
    return "ray workers" if name.startswith("ray::") or "default_worker.py" in cmd else "ray system"


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """{pid: (role, user+system CPU seconds so far)} for this process and all its descendants."""
    me = psutil.Process()
    out: dict[int, tuple[str, float]] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[proc.pid] = (_role(proc, me.pid), t.user + t.system)
    return out


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process that started in between counts from zero; one that
    ended in between is lost, which only undercounts)."""
    used = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in after.items():
        used[role] += seconds - before.get(pid, (role, 0.0))[1]
    return used


def load1() -> float:
    return os.getloadavg()[0]


def median_ci(xs: list[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """(median, low, high): the distribution-free interval for the median from order statistics, the narrowest
    (x_(k), x_(n-k+1)) whose coverage under Binomial(n, 1/2) is at least `level`; None below 6 values (no such
    interval exists: even (min, max) covers less than 95%)."""
    ys, n = sorted(xs), len(xs)
    k = None
    for j in range(1, n // 2 + 1):
        tail = sum(math.comb(n, i) for i in range(j)) / 2**n  # P(Bin(n, 1/2) < j)
        if 1 - 2 * tail >= level:
            k = j
    if k is None:
        return None
    return statistics.median(ys), ys[k - 1], ys[n - k]


def spread(xs: list[float]) -> str:
    """'median [low, high] (95% CI, n=...)' or, with too few values for one, 'median [min, max] (range, n=...)'."""
    ci = median_ci(xs)
    if ci is None:
        return f"{statistics.median(xs):.2f} [{min(xs):.2f}, {max(xs):.2f}] (range, n={len(xs)})"
    return f"{ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}] (95% CI, n={len(xs)})"


def summary(used: dict[str, Any], wall: float) -> str:
    """'driver 0.05, ray workers 1.93, ray system 0.02 cores' from CPU seconds and a wall time."""
    return ", ".join(f"{role} {used.get(role, 0.0) / wall:.2f}" for role in ROLES) + " cores"
