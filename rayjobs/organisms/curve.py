"""Organism training curves: the trainer's loss, averaged over windows of k optimiser steps, for MLflow's charts.

The trainer (organisms.train.run_phase) calls `record(loss)` after each step and `end_phase()` after each phase;
both do nothing unless a caller opened `recording(curve)` around it (the organism-training Ray task does), so
the trainer keeps no state of its own and its signature does not change. Cost: one tensor addition per step;
the value is read (on a GPU, the one wait for the device) once per window, not once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

from rayjobs.config import OrganismSpec

_active: ContextVar["LossCurve | None"] = ContextVar("asit_loss_curve", default=None)


class LossCurve:
    """Mean loss per window of `every` steps as (step, loss) points, step = optimiser steps since the attempt began
    (phase 2 continues phase 1's count). Each retry of an organism (another seed) starts a series of its own:
    `<name>_train_loss`, then `<name>_train_loss_attempt_2`, ..."""

    def __init__(self, name: str, every: int, phases: str = "") -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.name, self.every, self.phases = name, every, phases
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.attempt, self._step, self._n = 1, 0, 0
        self._sum: torch.Tensor | None = None

    @classmethod
    def for_spec(cls, spec: OrganismSpec, points: int = 200) -> "LossCurve":
        """About `points` points over both phases, and which steps each phase is."""
        h, steps = spec.helpful_steps, spec.helpful_steps + spec.backdoor_steps
        return cls(spec.name, max(1, steps // points),
                   f"steps 1-{h} phase 1 (helpful), {h + 1}-{steps} phase 2 (backdoor)")

    def report(self) -> dict[str, Any]:
        """What the driver logs (`log_curve`): the series and which steps each phase is."""
        return {"series": self.series, "phases": {f"{self.name}_train_loss_phases": self.phases}}

    @property
    def key(self) -> str:
        suffix = "" if self.attempt == 1 else f"_attempt_{self.attempt}"
        return f"{self.name}_train_loss{suffix}"

    def add(self, loss: torch.Tensor) -> None:
        """One optimiser step's loss (a detached 0-d tensor)."""
        self._sum = loss if self._sum is None else self._sum + loss
        self._n, self._step = self._n + 1, self._step + 1
        if self._n == self.every:
            self.flush()

    def flush(self) -> None:
        """Close the window early (a phase ended): its mean so far is a point."""
        if self._n and self._sum is not None:
            self.series.setdefault(self.key, []).append((self._step, float(self._sum) / self._n))
        self._sum, self._n = None, 0

    def new_attempt(self) -> None:
        """A retry with another seed: the next steps are a new series from step 0."""
        self.flush()
        self.attempt, self._step = self.attempt + 1, 0


@contextlib.contextmanager
def recording(curve: LossCurve) -> Iterator[LossCurve]:
    """Send the losses of the training inside this block to `curve`."""
    token = _active.set(curve)
    try:
        yield curve
    finally:
        curve.flush()
        _active.reset(token)


def log_curve(task_result: dict[str, Any]) -> dict[str, Any]:
    """The curve a training task returned (its "losses": `LossCurve.report`) into the active MLflow run (the stage's,
    on the driver): a metric per series, step = optimiser step, and which steps each phase is. Returns the result."""
    from rayjobs import tracking

    report = task_result["losses"]
    tracking.log_points(report["series"])
    if any(report["phases"].values()):
        tracking.log_params(report["phases"])
    return task_result


def record(loss: torch.Tensor) -> None:
    """After an optimiser step: the step's loss to the open curve, if any (never keeps the graph)."""
    if (curve := _active.get()) is not None:
        curve.add(loss.detach())


def end_phase() -> None:
    """After a phase: its last, partial window becomes a point, so no window mixes the two phases."""
    if (curve := _active.get()) is not None:
        curve.flush()
