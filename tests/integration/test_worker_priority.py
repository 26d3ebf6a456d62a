"""A local Ray started by asit runs its workers at the driver's CPU priority, not Ray's default nice +15."""

import os

import ray

from rayjobs.config import RayConfig
from rayjobs.jobs.runner import init_ray


def test_tasks_and_actors_run_at_the_drivers_niceness() -> None:
    if ray.is_initialized():
        ray.shutdown()
    init_ray(RayConfig(num_cpus=1))
    try:
        @ray.remote(num_cpus=1)
        def task_nice() -> int:
            return os.nice(0)

        @ray.remote(num_cpus=0)
        class Actor:
            def nice(self) -> int:
                return os.nice(0)

        mine = os.nice(0)
        assert ray.get(task_nice.remote()) == mine  # Ray's default would give min(mine + 15, 19)
        assert ray.get(Actor.remote().nice.remote()) == mine
    finally:
        ray.shutdown()
