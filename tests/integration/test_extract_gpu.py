"""On a GPU, extract runs one ExtractHost actor per stage (not the CPU's warm tasks): it must store what the CPU path
stores, row for row, to float32 rounding. Needs CUDA (`pytest -m gpu`; bench/gpu_all.sh runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from rayjobs.activations import read_activations
from rayjobs.config import ModelRef
from rayjobs.jobs import runner
from tests.integration.test_extract_reliability import LAYERS, make_cfg
from tests.unit.tp_models import save_tiny


@pytest.mark.gpu
def test_extract_on_cuda_stores_what_the_cpu_path_stores(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.fail("-m gpu needs a CUDA device")
    model_dir = save_tiny("llama", tmp_path / "llama")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = {}
        for device in ("cpu", "cuda"):
            cfg = make_cfg(model_dir, tmp_path / device, tmp_path).model_copy(
                update={"model": ModelRef(path=model_dir, device=device)})
            results[device] = runner.run("extract", cfg)
    finally:
        ray.shutdown()
    for layer in LAYERS:
        site = f"layers.{layer}.resid_post"
        cpu, gpu = (read_activations(results[d]["layers"][site]["dir"]) for d in ("cpu", "cuda"))
        assert (cpu.example_id == gpu.example_id).all() and (cpu.position == gpu.position).all()
        torch.testing.assert_close(gpu.vectors, cpu.vectors, rtol=1e-3, atol=1e-4)
