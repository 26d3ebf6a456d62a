"""Real pretrained models (opt-in: `pytest -m real tests/real`, after `bash infra/local/install-real.sh`).

Models come from the import cache ($ASIT_MODEL_CACHE, else ~/.cache/asit/models); the first run imports
them (about 1 and 4 minutes on 2 cores), later runs reload the cached directories in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def real_model_dirs() -> dict[str, Path]:
    """short name -> imported directory; a missing package fails with the pip command to run."""
    from rayjobs.errors import UserError
    from rayjobs.models.model_cache import import_model

    try:
        return {name: import_model(name).path for name in REAL_MODELS}
    except UserError as e:
        pytest.fail(f"real models unavailable: {e}", pytrace=False)


@pytest.fixture(scope="session", params=REAL_MODELS)
def real_model(request: pytest.FixtureRequest, real_model_dirs: dict[str, Path]):
    """(name, model, tokenizer), loaded once per session, two torch threads."""
    import torch

    from rayjobs.models import load_model, load_tokenizer

    torch.set_num_threads(2)
    path = str(real_model_dirs[request.param])
    return request.param, load_model(path), load_tokenizer(path)
