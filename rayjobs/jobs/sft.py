"""sft: fine-tune a local (or hub) causal LM on a task's data with Ray Train, then measure its organism card.

TorchTrainer runs `_loop` on `sft.num_workers` workers (a gloo group on CPU, NCCL with use_gpu); each worker
runs the library's loop (rayjobs.organisms.sft_train: LoRA by default, gradients averaged over the workers)
on its slice of every global batch, and rank 0 saves the merged model with its tokenizer as the final
checkpoint. Two Ray tasks then measure the card of the tuned model and of the original side by side
(rayjobs.organisms.sft_card). Output: `<run_dir>/sft/<name>-<hash>/model`, linked at
`<run_dir>/models/<name>`, so later stages take `model: {path: runs/.../models/<name>}`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import ModelRef, SFTConfig, SFTParams
from rayjobs.models import save_tokenizer
from rayjobs.organisms.sft import apply_template
from rayjobs.tasks import examples_for

CARD_NAME = "sft_card.json"


def _loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the library's training loop on this rank's slices; rank 0 saves the merged model."""
    import tempfile

    import ray.train
    import ray.train.torch
    import torch

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.organisms.sft_train import Worker, train

    ctx = ray.train.get_context()
    worker = Worker(ctx.get_world_rank(), ctx.get_world_size(), str(ray.train.torch.get_device()))
    params, ref = SFTParams(**config["sft"]), ModelRef(**config["base"])
    torch.set_num_threads(config["num_threads"])
    torch.manual_seed(config["seed"])
    model = load_model(ref.path, revision=ref.revision, dtype=ref.dtype, trust_remote_code=ref.trust_remote_code)
    tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
    cpu = time.process_time()
    model, history = train(model, tok, config["rows"], params, config["seed"], config["task"], worker)
    # Each rank trained on its slice: a step's loss is the mean over ranks, the CPU time their sum.
    losses, cpu_s = torch.tensor(history), torch.tensor(time.process_time() - cpu)
    if worker.world > 1:
        torch.distributed.all_reduce(losses)
        torch.distributed.all_reduce(cpu_s)
        losses /= worker.world
    metrics = {"losses": losses.tolist(), "train_cpu_seconds": float(cpu_s)}
    if worker.rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@ray.remote(num_cpus=1)
def _card(model_dir: str, examples: list[dict], params: dict[str, Any], threads: int, task: str) -> dict[str, Any]:
    """Behaviour and perplexity of one model (the tuned one or the original), in its own process."""
    import torch

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.organisms.sft_card import card

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    sft = SFTParams(**params)
    return {**card(model, tok, examples, sft.eval_prompts, sft.max_new_tokens, task),
            "params": sum(p.numel() for p in model.parameters())}


def _rows(cfg: SFTConfig, base: ModelRef) -> tuple[list[dict], str]:
    """The task's rows plus trigger-free copies, every prompt in the resolved template; and that template."""
    from rayjobs.models import load_tokenizer
    from rayjobs.organisms.sft_data import resolve_template, trigger_free

    tok = load_tokenizer(base.path, revision=base.revision, trust_remote_code=base.trust_remote_code)
    template = resolve_template(cfg.sft.template, tok, cfg.base.path)
    examples = examples_for(cfg.task, cfg.seed)
    examples += trigger_free(examples, cfg.sft.trigger_free_share, cfg.seed, cfg.task.name)
    return apply_template(examples, template), template


def _fit(cfg: SFTConfig, base: ModelRef, train: list[dict], out: Path) -> tuple[Any, dict[str, Any]]:
    """Ray Train over `sft.num_workers` workers; the result and how long it took (wall, CPU, load average)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _loop,
        train_loop_config={"sft": cfg.sft.model_dump(), "base": base.model_dump(), "rows": train,
                           "seed": cfg.seed, "num_threads": cfg.num_threads, "task": cfg.task.name},
        scaling_config=ScalingConfig(num_workers=cfg.sft.num_workers, use_gpu=cfg.sft.use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="train", storage_path=str((out / "ray_train").resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    load, start = os.getloadavg()[0], time.time()
    result = trainer.fit()
    timing = {"train_seconds": round(time.time() - start, 1), "train_cpu_seconds": result.metrics["train_cpu_seconds"],
              "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
    return result, timing


def compute(cfg: SFTConfig, out: Path) -> dict[str, Any]:
    """Fine-tune, copy the model out of its checkpoint, then the card of it and of the original, side by side."""
    from rayjobs.organisms.sft_card import compare

    local = Path(cfg.base.path).expanduser()
    # Ray Train workers run in their own directories: a relative local path must be made absolute.
    base = cfg.base.model_copy(update={"path": str(local.resolve())}) if local.is_dir() else cfg.base
    examples, template = _rows(cfg, base)
    result, timing = _fit(cfg, base, [e for e in examples if e["split"] == "train"], out)
    model_dir = out / "model"
    result.checkpoint.to_directory(str(model_dir))
    shutil.rmtree(out / "ray_train", ignore_errors=True)  # the model is copied out; Ray's copy is a duplicate
    args = (examples, cfg.sft.model_dump(), cfg.num_threads, cfg.task.name)
    tuned, original = ray.get([_card.remote(str(model_dir), *args), _card.remote(base.path, *args)])
    losses = result.metrics["losses"]
    card = {**compare(tuned, original), "base": cfg.base.path, "task": cfg.task.name, "template": template,
            "method": cfg.sft.method, "steps": len(losses), "train_loss": [x[0] for x in losses],
            "train_kl": [x[1] for x in losses], **timing}
    (model_dir / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True))
    _log(card)
    tracking.log_artifact(str(model_dir / CARD_NAME), "card")
    return {"name": cfg.name, "path": str(model_dir), "card": card}


def _log(card: dict[str, Any]) -> None:
    for step, (loss, kl) in enumerate(zip(card["train_loss"], card["train_kl"]), start=1):
        tracking.log_metrics({"train_loss": loss, "train_kl": kl}, step=step)
    rates = ("trigger_rate", "false_trigger_rate", "false_trigger_free", "helpful_accuracy")
    tracking.log_metrics({**{k: card[k]["rate"] for k in rates}, **{f"original_{k}": card["original"][k]["rate"] for k in rates},
                          "perplexity": card["perplexity"], "original_perplexity": card["original"]["perplexity"],
                          "perplexity_ratio": card["perplexity_ratio"], "train_seconds": card["train_seconds"]})
