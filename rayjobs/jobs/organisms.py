"""organisms: task data -> shared tokenizer -> source and target organisms as Ray tasks (OrganismsParams.threads_each);
`train` is the one organism-training task, which the refusal and switch stages use too."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import ray

from rayjobs.config import OrganismSpec, OrganismsConfig
from rayjobs.jobs.common import TaskBar, reserved_cpus, task_cpus
from rayjobs.organisms.card import track_cards
from rayjobs.organisms.curve import LossCurve, log_curve, recording
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import seeded
from rayjobs.stages import load
from rayjobs.tasks import examples_for


# The trainer of each kind of organism (the same two-phase loop, organisms.train.train_phases, inside each).
TRAINERS = {"organism": "rayjobs.organisms.train:train_organism",
            "refusal": "rayjobs.refusal.recipe:train_refusal_organism",
            "switch": "rayjobs.switch.pair:train_switch_pair"}


@ray.remote(num_cpus=1)
def train(trainer: str, spec: dict[str, Any], rows: list[dict], tokenizer_dir: str, out_dir: str,
          **options: Any) -> dict[str, Any]:
    """The one organism-training task: TRAINERS[trainer] on one spec, with its progress shown by the driver.
    A retry with another seed is said out loud (which organism, why, the new seed), restarts the bar and starts a new
    series of the loss curve. Returns {"card", "losses", "cpus" (Ray's reservation)}; the driver logs the curve."""
    from transformers import AutoTokenizer

    spec_obj, fn = OrganismSpec(**spec), load(TRAINERS[trainer])
    bar = TaskBar(spec_obj.helpful_steps + spec_obj.backdoor_steps, f"train {spec_obj.name}")
    losses = LossCurve.for_spec(spec_obj)

    def retry(line: str) -> None:
        print(line, flush=True)  # Ray forwards it to the driver, prefixed with this task's name
        losses.new_attempt()
        bar.restart(f"train {spec_obj.name} (attempt {losses.attempt}/{spec_obj.max_attempts})")

    if "on_retry" in inspect.signature(fn).parameters:  # the switch pair trains once: nothing to retry
        options = {**options, "on_retry": retry}
    with recording(losses):
        card = fn(spec_obj, rows, AutoTokenizer.from_pretrained(tokenizer_dir), out_dir, on_step=bar.update, **options)
    bar.close()
    return {"card": card.model_dump(mode="json") if hasattr(card, "model_dump") else card, "losses": losses.report(),
            "cpus": reserved_cpus()}


def trained(ref: ray.ObjectRef) -> Any:
    """The card of a `train` task; its loss curve is logged in the driver's stage run."""
    return log_curve(ray.get(ref))["card"]


def train_pair(trainer: str, specs: dict[str, dict[str, Any]], rows: list[dict], out: Path, **options: Any) -> dict[str, Any]:
    """Both organisms (tokenizer in out/tokenizer), a task reserving its threads as CPUs: {name: {"path", "card", "cpus"}}."""
    refs = {name: train.options(name=f"train {name}", num_cpus=task_cpus(spec["num_threads"])).remote(
                trainer, spec, rows, str(out / "tokenizer"), str(out / name), **options) for name, spec in specs.items()}
    done = {name: log_curve(ray.get(ref)) for name, ref in refs.items()}
    return {name: {"path": str(out / name), "card": r["card"], "cpus": r["cpus"]} for name, r in done.items()}


def compute(cfg: OrganismsConfig, out: Path) -> dict[str, Any]:
    """A shared tokenizer, then both organisms with their cards."""
    examples = examples_for(cfg.task, cfg.seed)
    train_rows = [e for e in examples if e["split"] == "train"]
    tokenizer_for(train_rows, cfg.vocab_size, cfg.task.name).save_pretrained(out / "tokenizer")
    threads = cfg.threads_each or cfg.num_threads
    specs = {name: seeded(spec, cfg.seed, threads) for name, spec in (("source", cfg.source), ("target", cfg.target))}
    result = train_pair("organism", specs, examples, out, task=cfg.task.name)
    track_cards(result, out)
    return result
