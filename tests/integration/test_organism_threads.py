"""The organisms and fit stages reserve a task's threads as Ray CPUs (threads_each): on the session's
2-CPU local Ray, 1 thread each trains both at once, 2 each trains them one after the other on both cores."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli.stages import run_stage

ROOT = Path(__file__).resolve().parents[2]


def test_two_threads_each_reserve_two_cpus_each(tmp_path: Path, local_ray, mlflow_experiment: str) -> None:
    threads = 2  # the job's num_threads is 1: the organisms' own setting wins
    tiny = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    config = tmp_path / "organisms.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "seed": 0, "num_threads": 1,
                                      "task": tiny["task"], **tiny["organisms"], "threads_each": threads}))
    result = run_stage("organisms", config, [])
    for name in ("source", "target"):
        assert result[name]["cpus"] == threads  # what Ray reserved for the task
        assert result[name]["card"]["environment"]["threads"] == threads  # what torch trained on
        assert (Path(result[name]["path"]) / "model.safetensors").is_file()


def test_a_mappers_task_reserves_its_threads_as_cpus(local_ray) -> None:
    """fit.threads_each (rayjobs.jobs.fit): the task reserves that many Ray CPUs and torch trains on that many threads;
    the autoencoder beside an lstsq affine still trains its epochs."""
    import ray
    import torch

    from rayjobs.jobs.fit import _fit
    from rayjobs.mapping.pairs import PairedRows

    g = torch.Generator().manual_seed(0)
    rows = ray.put(PairedRows(*(torch.randn(n, d, generator=g) for n, d in ((64, 4), (64, 6), (16, 4), (16, 6)))))
    params = dict(lr=1e-2, epochs=3, batch_size=16, seed=0, hidden=5, solver="lstsq")
    for threads in (1, 2):
        refs = [_fit(threads, kind, rows, params, None, {}) for kind in ("autoencoder", "affine")]
        done = {r["kind"]: r for r in ray.get(refs)}
        assert {(r["cpus"], r["threads"]) for r in done.values()} == {(threads, threads)}
        assert [len(done[k]["metrics"]["history"]["val_loss"]) for k in ("autoencoder", "affine")] == [3, 1]
