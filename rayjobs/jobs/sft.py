"""sft: fine-tune a local (or hub) causal LM on a task's data with Ray Train, then measure its organism card.

TorchTrainer runs `_loop` on `sft.num_workers` workers (DDP over gloo on CPU, NCCL with use_gpu); each
worker trains on its slice of every global batch (rayjobs.organisms.sft), rank 0 saves the model with
its tokenizer as the final checkpoint. A Ray task then generates on held-out prompts for the card:
trigger rate, false-trigger rate, task accuracy. Output: `<run_dir>/sft/<name>-<hash>/model`, linked
at `<run_dir>/models/<name>`, so later stages take `model: {path: runs/.../models/<name>}`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import ModelRef, SFTConfig, SFTParams
from rayjobs.organisms.sft import apply_template
from rayjobs.tasks import examples_for, get_task

CARD_NAME = "sft_card.json"


def _loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the same seeded global batches on every rank, this rank's slice of each."""
    import tempfile

    import ray.train
    import ray.train.torch
    import torch

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.organisms.data import encode_examples
    from rayjobs.organisms.sft import global_batches, steps_per_epoch, train_step, worker_slice

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    params, ref = SFTParams(**config["sft"]), ModelRef(**config["base"])
    torch.set_num_threads(config["num_threads"])
    torch.manual_seed(config["seed"])
    device = ray.train.torch.get_device()
    model = load_model(ref.path, revision=ref.revision, dtype=ref.dtype, trust_remote_code=ref.trust_remote_code)
    tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
    model.train()
    # Every rank encodes all rows: the global batch order must be identical everywhere, and SFT sets are
    # small next to the model. (A sharded Ray Data input would give each rank a different order.)
    data = encode_examples(config["examples"], tok, params.max_len, helpful=False,
                           text=get_task(config["task"]).training_text)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    per_epoch = steps_per_epoch(len(data[0]), params.global_batch_size)
    losses: list[float] = []
    epoch_losses: list[float] = []  # reported whole: Ray keeps only checkpointed reports in result.metrics
    for step, batch in enumerate(global_batches(len(data[0]), params.global_batch_size, params.epochs, config["seed"])):
        losses.append(train_step(model, opt, data, worker_slice(batch, rank, world), params.grad_clip, device))
        if (step + 1) % per_epoch:
            continue
        epoch = (step + 1) // per_epoch
        loss = torch.tensor(sum(losses[-per_epoch:]) / per_epoch)
        if world > 1:  # each rank saw its slice: the epoch's loss is the mean over ranks
            torch.distributed.all_reduce(loss)
            loss /= world
        epoch_losses.append(float(loss))
        metrics = {"epoch": epoch, "train_loss": float(loss), "steps": step + 1, "epoch_losses": list(epoch_losses)}
        if epoch < params.epochs or rank != 0:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            getattr(model, "module", model).save_pretrained(tmp)
            tok.save_pretrained(tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@ray.remote(num_cpus=1)
def _card(model_dir: str, examples: list[dict], params: dict[str, Any], threads: int, task: str) -> dict[str, Any]:
    import torch

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.organisms.checks import behaviour

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    sft = SFTParams(**params)
    measured = behaviour(model, tok, examples, sft.eval_prompts, task, max_new_tokens=sft.max_new_tokens)
    return {**measured, "params": sum(p.numel() for p in model.parameters())}


def compute(cfg: SFTConfig, out: Path) -> dict[str, Any]:
    """Ray Train over `sft.num_workers` workers, the model copied out of its checkpoint, then its card."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    local = Path(cfg.base.path).expanduser()
    # Ray Train workers run in their own directories: a relative local path must be made absolute.
    base = cfg.base.model_copy(update={"path": str(local.resolve())}) if local.is_dir() else cfg.base
    examples = apply_template(examples_for(cfg.task, cfg.seed), cfg.sft.template)
    train = [e for e in examples if e["split"] == "train"]
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"sft": cfg.sft.model_dump(), "base": base.model_dump(), "examples": train,
                           "seed": cfg.seed, "num_threads": cfg.num_threads, "task": cfg.task.name},
        scaling_config=ScalingConfig(num_workers=cfg.sft.num_workers, use_gpu=cfg.sft.use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="train", storage_path=str((out / "ray_train").resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    result = trainer.fit()
    model_dir = out / "model"
    result.checkpoint.to_directory(str(model_dir))
    shutil.rmtree(out / "ray_train", ignore_errors=True)  # the model is copied out; Ray's copy is a duplicate
    card = ray.get(_card.remote(str(model_dir), examples, cfg.sft.model_dump(), cfg.num_threads, cfg.task.name))
    card = {**card, "base": cfg.base.path, "task": cfg.task.name, "template": cfg.sft.template,
            "final_train_loss": float(result.metrics["train_loss"]),
            "train_loss": [float(x) for x in result.metrics["epoch_losses"]]}
    (model_dir / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True))
    for step, loss in enumerate(card["train_loss"], start=1):
        tracking.log_metrics({"train_loss": loss}, step=step)
    tracking.log_metrics({k: card[k] for k in ("trigger_rate", "false_trigger_rate", "helpful_accuracy")})
    tracking.log_artifact(str(model_dir / CARD_NAME), "card")
    return {"name": cfg.name, "path": str(model_dir), "card": card}
