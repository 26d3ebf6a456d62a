"""The organisms stage reserves each organism's threads as Ray CPUs (OrganismsParams.threads_each): on the session's
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
