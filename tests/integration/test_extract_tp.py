"""`model.backend: deepspeed, tp_size: 2` extracts what the HF backend extracts (tiny Llama, gloo on CPU).

A local Ray with 2 logical CPUs: the HF extraction's Ray Data actor takes one and is gone when its
dataset finishes, then the two AutoTP ranks take both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from rayjobs.activations import read_activations, read_manifest
from rayjobs.config import ExtractConfig, ModelRef
from rayjobs.jobs import runner
from tests.unit.tp_models import save_tiny

LAYERS = [0, 2]  # 2: the last block, read with a hook (HF's hidden_states[-1] is after the final norm)


@pytest.mark.slow  # ~40 s: two AutoTP ranks start, import deepspeed and form a gloo group
def test_tp2_extract_matches_the_hf_backend(local_ray, tmp_path: Path) -> None:
    model_dir = save_tiny("llama", tmp_path / "llama")
    common = dict(run_dir=str(tmp_path / "runs"), name="src", layers=LAYERS, task={"n_examples": 40}, n_examples=10,
                  batch_size=4, num_threads=1, tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"})
    hf = runner.run("extract", ExtractConfig(model=ModelRef(path=model_dir), **common))
    tp = runner.run("extract", ExtractConfig(model=ModelRef(path=model_dir, backend="deepspeed", tp_size=2), **common))
    assert hf["dir"] != tp["dir"] and tp["batches"]["computed"] == 3
    for site in (f"layers.{layer}.resid_post" for layer in LAYERS):
        want, got = read_activations(hf["layers"][site]["dir"]), read_activations(tp["layers"][site]["dir"])
        assert len(got) == len(want) > 0 and got.meta == want.meta
        for column in ("example_id", "position", "token_id"):
            np.testing.assert_array_equal(getattr(got, column), getattr(want, column))
        torch.testing.assert_close(got.vectors, want.vectors, rtol=1e-5, atol=1e-5)
        assert [s.name for s in read_manifest(tp["layers"][site]["dir"]).shards] == \
               [s.name for s in read_manifest(hf["layers"][site]["dir"]).shards]
    assert all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())
