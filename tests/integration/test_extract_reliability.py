"""Extraction loses nothing and duplicates nothing when its actor or its driver is SIGKILLed; `--repair`
verifies a committed output and recomputes only its bad shards; the same config gives the same bytes.

One local Ray for the module (2 CPUs). Crashes are real SIGKILLs at armed points
(rayjobs.activations.faults): in the actor between writing a shard and renaming it into place, and in
the driver right after it journaled a shard.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from rayjobs.activations import MANIFEST_NAME, read_activations, read_manifest
from rayjobs.activations.faults import FAULTS_ENV, arm
from rayjobs.activations.resume import JOURNAL_NAME
from rayjobs.config import ExtractConfig, FitConfig, ModelRef
from rayjobs.errors import UserError
from rayjobs.jobs import extract, runner
from rayjobs.stages import STAGES
from rayjobs.models import load_tokenizer
from tests.unit.tp_models import save_tiny
from tests.integration.cli import asit

LAYERS = (0, 2)
N_BATCHES = 6  # 24 texts in batches of 4


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("extract-reliability")


@pytest.fixture(scope="module")
def model_dir(work: Path) -> str:
    return save_tiny("llama", work / "llama")


@pytest.fixture(scope="module")
def faults(work: Path) -> Path:
    """The armed-points directory; in the environment before Ray starts, so its workers see it too."""
    directory = work / "faults"
    directory.mkdir()
    old = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = str(directory)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield directory
    ray.shutdown()
    if old is None:
        del os.environ[FAULTS_ENV]
    else:
        os.environ[FAULTS_ENV] = old


def make_cfg(model_dir: str, run_dir: Path, work: Path) -> ExtractConfig:
    return ExtractConfig(run_dir=str(run_dir), model=ModelRef(path=model_dir), name="src", layers=list(LAYERS),
                         task={"n_examples": 60}, n_examples=24, batch_size=4, num_threads=1,
                         tracking={"uri": f"sqlite:///{work}/mlflow.db"})


def expected_rows(cfg: ExtractConfig) -> dict[int, int]:
    """example id -> token count, from the tokenizer alone: what must be stored, once per position."""
    tok = load_tokenizer(cfg.model.path)
    return {r["id"]: len(tok(r["text"])["input_ids"]) for r in extract._texts(cfg)}


def assert_exactly_once(result: dict, cfg: ExtractConfig) -> None:
    """Every (example id, position) row of every layer exactly once; nothing on disk but readable
    shards listed in the manifest, the manifest and the journal."""
    want = expected_rows(cfg)
    assert len(want) == 24
    for layer in LAYERS:
        site_dir = Path(result["layers"][f"layers.{layer}.resid_post"]["dir"])
        acts = read_activations(site_dir, verify_sha256=True)
        keys = set(zip(acts.example_id.tolist(), acts.position.tolist()))
        assert len(keys) == len(acts), "duplicate (example id, position) rows"
        assert keys == {(i, p) for i, n in want.items() for p in range(n)}
        names = {p.name for p in site_dir.iterdir()}
        shards = {s.name for s in read_manifest(site_dir).shards}
        assert names == shards | {MANIFEST_NAME, JOURNAL_NAME} and len(shards) == N_BATCHES
        for name in shards:
            pq.ParquetFile(site_dir / name)  # every footer readable


@pytest.fixture(scope="module")
def committed(faults: Path, model_dir: str, work: Path) -> tuple[ExtractConfig, dict]:
    """A clean extraction, the reference for the others."""
    cfg = make_cfg(model_dir, work / "clean", work)
    result = runner.run("extract", cfg)
    assert result["batches"] == {"planned": N_BATCHES, "reused": 0, "computed": N_BATCHES, "dropped": []}
    assert_exactly_once(result, cfg)
    return cfg, result


def manifests(result: dict) -> dict[str, list]:
    return {site: [s.to_dict() for s in read_manifest(v["dir"]).shards] for site, v in result["layers"].items()}


def test_sigkilled_actor_mid_write_is_restarted_and_nothing_is_lost_or_doubled(
        faults: Path, model_dir: str, work: Path, committed) -> None:
    cfg = make_cfg(model_dir, work / "actor-kill", work)
    # The 3rd shard the actor writes: batch 2's first layer, fully written to its temporary file, not renamed.
    trigger = arm(faults, "atomic.before_rename", after=3)
    result = runner.run("extract", cfg)
    assert not trigger.exists(), "the actor was never killed"
    assert result["batches"]["computed"] == N_BATCHES
    assert_exactly_once(result, cfg)
    assert manifests(result) == manifests(committed[1])  # the retried batch wrote the same bytes


def _write_config(cfg: ExtractConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), "ray": {"address": ray.get_runtime_context().gcs_address}}))
    return path


@pytest.mark.slow  # two fresh interpreters
def test_rerun_after_a_sigkilled_driver_reuses_verified_shards_and_computes_the_rest(
        faults: Path, model_dir: str, work: Path, committed) -> None:
    cfg = make_cfg(model_dir, work / "driver-kill", work)
    config = _write_config(cfg, work / "driver-kill.yaml")
    arm(faults, "extract.journal", after=5)  # journaled: batches 1-2 (both layers) and batch 3's first layer
    killed = asit("extract", str(config), cwd=work)
    assert killed.returncode == -9, killed.stderr[-3000:]
    out = STAGES["extract"].directory(cfg)
    assert not (out / "_done.json").exists()
    journaled = {layer: [json.loads(line)["name"]
                         for line in (out / f"layers.{layer}.resid_post" / JOURNAL_NAME).read_text().splitlines()]
                 for layer in LAYERS}
    assert [len(v) for v in journaled.values()] == [3, 2]
    first, second = journaled[2]
    # Debris a crash can leave too: a torn (footer-less) journaled shard, and a temporary file.
    torn = out / "layers.0.resid_post" / first
    torn.write_bytes(torn.read_bytes()[:-30])
    (out / "layers.2.resid_post" / f".{second}.tmp-0123456789ab").write_bytes(b"PAR1 half a shard")
    kept = {layer: os.stat(out / f"layers.{layer}.resid_post" / second).st_ino for layer in LAYERS}

    rerun = asit("extract", str(config), cwd=work)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout)
    assert result["batches"]["reused"] == 1 and result["batches"]["computed"] == N_BATCHES - 1
    problems = {Path(d["file"]).name: d["problem"] for d in result["batches"]["dropped"]}
    assert problems[first].startswith("torn or corrupt shard")
    assert problems[f".{second}.tmp-0123456789ab"] == "temporary file of an interrupted write"
    assert all(p.startswith("not in _journal.jsonl") for n, p in problems.items()
               if n not in (first, f".{second}.tmp-0123456789ab"))
    assert {layer: os.stat(out / f"layers.{layer}.resid_post" / second).st_ino for layer in LAYERS} == kept
    assert_exactly_once(result, cfg)
    assert manifests(result) == manifests(committed[1])


def _flip_vector_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the vector column: footer, size and rows stay valid
    path.write_bytes(bytes(data))


def test_repair_names_and_recomputes_exactly_the_bad_shards(model_dir: str, work: Path, committed) -> None:
    cfg0, result0 = committed
    cfg = make_cfg(model_dir, work / "repair", work)
    out = STAGES["extract"].directory(cfg)
    shutil.copytree(Path(result0["dir"]), out)
    l0, l2 = out / "layers.0.resid_post", out / "layers.2.resid_post"
    names = [s.name for s in read_manifest(l0).shards]
    torn, unlisted, short, altered = names[0], names[1], names[2], names[3]
    (l0 / torn).write_bytes((l0 / torn).read_bytes()[:-30])
    body = json.loads((l2 / MANIFEST_NAME).read_text())
    body["shards"] = [s for s in body["shards"] if s["name"] != unlisted]
    for s in body["shards"]:
        s["rows"] += s["name"] == short
    (l2 / MANIFEST_NAME).write_text(json.dumps(body))
    _flip_vector_byte(l0 / altered)
    (l0 / "part-999.parquet").write_bytes((l0 / names[5]).read_bytes())  # a shard of no plan
    for site_dir in (l0, l2):  # what a user sees first: the reader names a file and the fix
        with pytest.raises(UserError, match=rf"^{site_dir}/part-.*--repair"):
            read_activations(site_dir, verify_sha256=True)

    result = runner.run("extract", cfg, repair=True)
    dropped = {(Path(d["file"]).parent.name, Path(d["file"]).name): d["problem"] for d in result["batches"]["dropped"]}
    assert set(dropped) == {("layers.0.resid_post", torn), ("layers.2.resid_post", unlisted),
                            ("layers.2.resid_post", short), ("layers.0.resid_post", altered),
                            ("layers.0.resid_post", "part-999.parquet")}
    assert dropped["layers.0.resid_post", torn].startswith("torn or corrupt shard")
    assert dropped["layers.2.resid_post", unlisted].startswith("not in _manifest.json")
    assert "manifest says" in dropped["layers.2.resid_post", short]
    assert dropped["layers.0.resid_post", altered].startswith("sha256 differs")
    assert result["batches"]["computed"] == 4 and result["batches"]["reused"] == N_BATCHES - 4
    assert_exactly_once(result, cfg)
    assert manifests(result) == manifests(result0)

    again = runner.run("extract", cfg, repair=True)  # an intact output: verified, nothing recomputed
    assert again["batches"] == {"planned": N_BATCHES, "reused": N_BATCHES, "computed": 0, "dropped": []}


@pytest.mark.slow  # two fits on top of two extractions
def test_same_seed_and_config_give_identical_activations_and_mapper_metrics(
        model_dir: str, work: Path, committed) -> None:
    cfg_a, result_a = committed
    result_b = runner.run("extract", make_cfg(model_dir, work / "determinism", work))
    assert result_b["dir"] != result_a["dir"]
    assert manifests(result_b) == manifests(result_a)  # names, rows, bytes and sha256 of every shard

    def fit_metrics(result: dict, run_dir: Path) -> dict:
        dirs = {layer: result["layers"][f"layers.{layer}.resid_post"]["dir"] for layer in LAYERS}
        done = runner.run("fit", FitConfig(run_dir=str(run_dir), source_acts=dirs[0], target_acts=dirs[2], epochs=3,
                                 num_threads=1, tracking={"uri": f"sqlite:///{work}/mlflow.db"}))
        # The weights bit for bit and the file's recorded sha256 (save_mapper keeps the safetensors
        # header to one metadata key, whose order cannot vary between processes).
        return {kind: {"metrics": json.loads((Path(d) / "mapper.json").read_text())["metrics"],
                       "sha256": json.loads((Path(d) / "mapper.json").read_text())["sha256"],
                       "weights": {k: v.numpy().tobytes() for k, v in load_file(Path(d) / "mapper.safetensors").items()}}
                for kind, d in done["mappers"].items()}

    metrics_a = fit_metrics(result_a, work / "clean")
    assert metrics_a == fit_metrics(result_b, work / "determinism")
    assert set(metrics_a) == {"autoencoder", "affine"} and np.isfinite(metrics_a["affine"]["metrics"]["val"]["mse"])


def test_cli_passes_repair_to_the_extract_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    seen = {}
    monkeypatch.setattr(runner, "run", lambda stage, cfg, repair=False: seen.update(repair=repair) or {"ok": True})
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": "m"}, "name": "src", "layers": [0]}))
    for args, want in [(["--repair"], True), ([], False)]:
        proc = CliRunner().invoke(app, ["extract", str(config), *args])
        assert proc.exit_code == 0, proc.output
        assert seen.pop("repair") is want


def test_tasks_of_several_batches_write_what_one_batch_per_task_writes(
        faults: Path, model_dir: str, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """12 batches on 2 one-thread slots: 3 planned batches per Ray Data task (extract.batches_per_task); the shards,
    their rows and bytes are those of one batch per task."""
    assert extract.batches_per_task(12, 2) == 3
    results = {}
    for per_task_cap in (extract.MAX_BATCHES_PER_TASK, 1):
        monkeypatch.setattr(extract, "MAX_BATCHES_PER_TASK", per_task_cap)
        cfg = make_cfg(model_dir, work / f"grouped-{per_task_cap}", work).model_copy(update={"batch_size": 2})
        results[per_task_cap] = runner.run("extract", cfg)
        assert results[per_task_cap]["batches"]["computed"] == 12
    grouped, single = results.values()
    assert manifests(grouped) == manifests(single)  # every shard's name, rows and sha256
    for site in grouped["layers"]:
        acts = read_activations(grouped["layers"][site]["dir"], verify_sha256=True)
        assert len(set(zip(acts.example_id.tolist(), acts.position.tolist()))) == len(acts)


def test_batches_per_task_keeps_two_tasks_per_slot() -> None:
    assert [extract.batches_per_task(n, 2) for n in (1, 3, 4, 8, 12, 16, 63, 1000)] == [1, 1, 1, 2, 3, 4, 4, 4]
    assert extract.batches_per_task(63, 1) == 4 and extract.batches_per_task(5, 1) == 2 and extract.batches_per_task(0, 1) == 1


def test_longest_first_batches_pad_less_and_store_what_the_task_order_stores(
        faults: Path, model_dir: str, work: Path) -> None:
    """batch_order longest_first (the default) against task: the planned batches run longest first and pad fewer
    tokens; both store the same (example, position) rows with the same values to float rounding, and those equal the
    text's own forward, alone and unpadded (HF output_hidden_states)."""
    results, plans = {}, {}
    for order in ("task", "longest_first"):
        cfg = make_cfg(model_dir, work / f"order-{order}", work).model_copy(update={"batch_order": order})
        plans[order] = extract._planned(cfg)[1]
        results[order] = runner.run("extract", cfg)
    tok = load_tokenizer(model_dir)
    n_tokens = {r["id"]: len(tok(r["text"])["input_ids"]) for r in extract._texts(cfg)}
    assert len(set(n_tokens.values())) > 3, "the texts must differ in length for the order to matter"
    longest = {o: [max(n_tokens[i] for i in b["ids"]) for b in plans[o]] for o in plans}
    assert longest["longest_first"] == sorted(longest["longest_first"], reverse=True)
    assert [i for b in plans["task"] for i in b["ids"]] == list(n_tokens)  # task order: consecutive, as given
    padded = {o: sum(len(b["ids"]) * m for b, m in zip(plans[o], longest[o], strict=True)) for o in plans}
    assert padded["longest_first"] < padded["task"]

    from rayjobs.models import load_model

    model, texts = load_model(model_dir), {r["id"]: r["text"] for r in extract._texts(cfg)}
    for layer in LAYERS:
        a, b = (read_activations(results[o]["layers"][f"layers.{layer}.resid_post"]["dir"]) for o in ("task", "longest_first"))
        ia, ib = np.lexsort((a.position, a.example_id)), np.lexsort((b.position, b.example_id))
        assert np.array_equal(a.example_id[ia], b.example_id[ib]) and np.array_equal(a.position[ia], b.position[ib])
        torch.testing.assert_close(b.vectors[ib].float(), a.vectors[ia].float(), rtol=1e-4, atol=1e-5)
        if layer != 0:
            continue  # HF's last hidden state is after the final norm; block 0's output is hidden_states[1]
        for example in (min(texts), max(texts)):
            enc = tok(texts[example], return_tensors="pt")
            with torch.no_grad():
                ref = model(**enc, output_hidden_states=True).hidden_states[1][0]
            mine = b.vectors[ib][b.example_id[ib] == example].float()
            torch.testing.assert_close(mine, ref, rtol=1e-4, atol=1e-5)
