"""DeepSpeed AutoTP: one HF model sharded over a torch.distributed group, hooks still firing.

The only module that imports deepspeed, and only inside functions, so the library imports fast.
AutoTP (`replace_with_kernel_inject=False`) keeps every HF decoder layer and swaps only its
nn.Linear children for sharded ones whose outputs are all-reduced, so a decoder layer's output is
the full hidden state on every rank and the hooks in rayjobs.interventions work unchanged. Kernel
injection would replace the decoder layers themselves and the hooks would stop firing: never use it.
"""

from __future__ import annotations

import importlib
import os
import socket
from typing import Any

import torch
from torch import nn

from rayjobs.errors import UserError
from rayjobs.models.loading import DTYPES, load_model


def check_tp_size(config: Any, tp_size: int) -> None:
    """UserError unless tp_size divides the attention heads and the KV heads of `config` (an HF config)."""
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    for name, n in (("attention heads", heads), ("KV heads", kv_heads)):
        if n and n % tp_size:
            ok = [d for d in range(1, n + 1) if heads % d == 0 and kv_heads % d == 0]
            raise UserError(f"model.tp_size={tp_size} does not divide the model's {n} {name}; "
                            f"set model.tp_size to one of {ok}")


def free_port() -> int:
    """A TCP port free on this host right now, for rank 0's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _disable_shm_allreduce() -> None:
    # DeepSpeed's TorchBackend builds a shared-memory all-reduce op on CPU (`build_shm_op`) and AutoTP's
    # LinearAllreduce then routes through it; in DeepSpeed 0.19 that op segfaults on our CPU hosts.
    # With no shm op, `inference_all_reduce` falls back to plain torch.distributed.all_reduce (gloo).
    # Through importlib: `deepspeed.comm.torch` as an attribute is the torch package (a star import).
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    ds_torch.build_shm_op = lambda: None


def init_group(rank: int, world_size: int, master_addr: str, master_port: int, device: str) -> None:
    """Join the torch.distributed group of the TP ranks: gloo on CPU, NCCL on GPU.

    LOCAL_RANK is 0: each rank sees one GPU (Ray sets CUDA_VISIBLE_DEVICES per actor) or none.
    """
    import deepspeed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0",
                      MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
    if device == "cpu":
        _disable_shm_allreduce()
    deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl",
                               auto_mpi_discovery=False, verbose=False, rank=rank, world_size=world_size)


def wrap_autotp(model: nn.Module, tp_size: int, dtype: str) -> nn.Module:
    """Shard `model` (on CPU, in eval mode) with AutoTP; returns the sharded HF model to hook and generate with.

    DeepSpeed moves each rank's shard to that rank's accelerator (the CPU on CPU hosts).
    """
    import deepspeed

    check_tp_size(model.config, tp_size)
    engine = deepspeed.init_inference(model, tensor_parallel={"tp_size": tp_size}, dtype=DTYPES[dtype],
                                      replace_with_kernel_inject=False)
    module = engine.module
    # Keep the engine alive with the model; object.__setattr__ so nn.Module does not register it as a
    # child (the engine is an nn.Module holding this model: a cycle that .eval() would recurse into).
    object.__setattr__(module, "_asit_engine", engine)
    return module.eval()


def load_tp_model(path: str, *, tp_size: int, dtype: str = "float32", revision: str | None = None,
                  trust_remote_code: bool = False) -> nn.Module:
    """Load an HF causal LM on CPU and shard it over the already-initialised group (see init_group)."""
    model = load_model(path, revision=revision, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code)
    return wrap_autotp(model, tp_size, dtype)


def destroy_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
