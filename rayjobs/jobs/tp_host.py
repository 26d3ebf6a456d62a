"""TPModelHost: one model sharded with DeepSpeed AutoTP over tp_size Ray actors, used like a ModelHost.

The ranks sit in one placement group (a CPU each, plus a GPU each on cuda) and form a
torch.distributed group (gloo on CPU, NCCL on GPU) at rank 0's address. Every call runs on every
rank with the same arguments: the sharded linears all-reduce inside each decoder layer, so hooks see
the full hidden state on every rank and apply the same specs; rank 0's answer is returned.
`make_host` picks the HF ModelHost or this one from `ref.backend`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.interventions import Generated
from rayjobs.jobs.hosts import Host, ModelHost
from rayjobs.models import load_tokenizer
from rayjobs.models.prompt_template import model_template

# Seconds to wait for the placement group before telling the user the cluster is busy.
RESERVE_TIMEOUT_S = 300


@ray.remote
class _TPRank(Host):
    """One AutoTP rank: joins the group, loads and shards the model; the Host methods run on its shard."""

    def __init__(self, ref: dict[str, Any], num_threads: int, rank: int) -> None:  # noqa: D107 - loads in setup
        torch.set_num_threads(num_threads)
        self.ref, self.rank = ModelRef(**ref), rank

    def rendezvous(self) -> tuple[str, str, int]:
        """(node id, node IP, a free port) for rank 0 to host the group's store."""
        from rayjobs.models.deepspeed_backend import free_port

        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ray.util.get_node_ip_address(), free_port()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def setup(self, master_addr: str, master_port: int) -> None:
        from rayjobs.models.deepspeed_backend import init_group, load_tp_model

        ref = self.ref
        init_group(self.rank, ref.tp_size, master_addr, master_port, ref.device)
        self.model = load_tp_model(ref.path, tp_size=ref.tp_size, dtype=ref.dtype, revision=ref.revision,
                                   trust_remote_code=ref.trust_remote_code)
        self.tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
        self.template = model_template(ref, self.tok)

    def shutdown(self) -> None:
        from rayjobs.models.deepspeed_backend import destroy_group

        destroy_group()


@ray.remote(num_cpus=0)
class TPModelHost:
    """Same methods as ModelHost; owns the rank actors and their placement group."""

    def __init__(self, ref: dict[str, Any], num_threads: int) -> None:
        self.ref = ModelRef(**ref)
        self.pg = _reserve(self.ref)
        per_rank = {"num_cpus": 1, "num_gpus": 1 if self.ref.device == "cuda" else 0}
        self.ranks = [
            _TPRank.options(**per_rank,
                            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i))
            .remote(ref, num_threads, i)
            for i in range(self.ref.tp_size)
        ]
        node0, ip0, port = ray.get(self.ranks[0].rendezvous.remote())
        nodes = ray.get([r.node_id.remote() for r in self.ranks[1:]])
        # One node: loopback, which every rank can reach whatever the node's interfaces are.
        addr = "127.0.0.1" if all(n == node0 for n in nodes) else ip0
        ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def _on_all(self, method: str, *args: Any) -> Any:
        # All ranks must enter the same collectives in the same order: every call goes to every rank
        # at once, and this actor is synchronous (one call at a time), so the ranks' queues stay in step.
        return ray.get([getattr(r, method).remote(*args) for r in self.ranks])[0]

    def info(self) -> dict[str, Any]:
        return {**ray.get(self.ranks[0].info.remote()), "backend": "deepspeed", "tp_size": self.ref.tp_size}

    def generate(self, prompts: list[str], specs: list[dict], max_new_tokens: int, trigger: str | None,
                 judged_by: str | None = None) -> list[str]:
        # Every rank sees the same all-reduced logits, so every rank stops its rows at the same step.
        return self._on_all("generate", prompts, specs, max_new_tokens, trigger, judged_by)

    def generate_flagged(self, prompts: list[str], specs: list[dict], max_new_tokens: int, trigger: str | None,
                         judged_by: str | None = None) -> Generated:
        return self._on_all("generate_flagged", prompts, specs, max_new_tokens, trigger, judged_by)

    def logits(self, prompts: list[str], specs: list[dict], trigger: str | None) -> torch.Tensor:
        return self._on_all("logits", prompts, specs, trigger)

    def trigger_contrast(self, site: str, prod: list[str], dev: list[str], triggers: tuple[str, str]) -> torch.Tensor:
        return self._on_all("trigger_contrast", site, prod, dev, triggers)

    def trigger_activations(self, site: str, prompts: list[str], trigger: str) -> torch.Tensor:
        return self._on_all("trigger_activations", site, prompts, trigger)

    def mapped_trigger_contrast(self, site: str, mapper_dir: str, prod: list[str], dev: list[str],
                                triggers: tuple[str, str]) -> torch.Tensor:
        return self._on_all("mapped_trigger_contrast", site, mapper_dir, prod, dev, triggers)

    def last_token_diff_of_means(self, layer: int, prod: list[str], dev: list[str],
                                 mapper_dir: str | None = None) -> torch.Tensor:
        return self._on_all("last_token_diff_of_means", layer, prod, dev, mapper_dir)

    def layer_sweep(self, prod: list[str], dev: list[str], held_out: list[str], alphas: list[float],
                    max_new_tokens: int, task: str) -> dict[str, dict[str, float]]:
        return self._on_all("layer_sweep", prod, dev, held_out, alphas, max_new_tokens, task)

    def layer_generations(self, prod: list[str], dev: list[str], held_out: list[str], alphas: list[float],
                          max_new_tokens: int, task: str, blocks: list[int] | None = None,
                          desc: str | None = None) -> dict[str, dict[str, Generated]]:
        return self._on_all("layer_generations", prod, dev, held_out, alphas, max_new_tokens, task, blocks, desc)

    def extract_batch(self, ids: list[int], texts: list[str], name: str, metas: dict[int, dict],
                      out_dirs: dict[int, str], max_length: int, bounds: list[list[int]] | None = None) -> list[dict[str, Any]]:
        # Every rank must run the forward (its shard of each layer all-reduces with the others');
        # rank 0 alone writes, so each shard has one writer.
        calls = [r.extract_batch.remote(ids, texts, name, metas, out_dirs, max_length, i == 0, bounds)
                 for i, r in enumerate(self.ranks)]
        return ray.get(calls)[0]

    def close(self) -> None:
        """Leave the group, stop the ranks and free their reserved CPUs/GPUs."""
        ray.get([r.shutdown.remote() for r in self.ranks])
        for rank in self.ranks:
            ray.kill(rank)
        remove_placement_group(self.pg)


def _reserve(ref: ModelRef) -> Any:
    bundle = {"CPU": 1, "GPU": 1} if ref.device == "cuda" else {"CPU": 1}
    pg = placement_group([dict(bundle) for _ in range(ref.tp_size)], strategy="PACK")
    try:
        ray.get(pg.ready(), timeout=RESERVE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise UserError(f"model.tp_size={ref.tp_size}: could not reserve {ref.tp_size} x {bundle} within "
                        f"{RESERVE_TIMEOUT_S} s; the cluster is busy, free resources or lower model.tp_size") from None
    return pg


def check_cluster(ref: ModelRef) -> None:
    """UserError when the Ray cluster has fewer CPUs/GPUs than tp_size ranks need."""
    kind = "GPU" if ref.device == "cuda" else "CPU"
    have = int(ray.cluster_resources().get(kind, 0))
    if ref.tp_size > have:
        raise UserError(f"model.tp_size={ref.tp_size} needs {ref.tp_size} {kind}s but the Ray cluster has {have}; "
                        f"set model.tp_size to at most {have} or add {kind}s to the cluster")


def check_heads(ref: ModelRef) -> None:
    """The head-count check before any actor starts, so the user sees one line, not an actor crash."""
    from transformers import AutoConfig

    from rayjobs.models.deepspeed_backend import check_tp_size

    config = AutoConfig.from_pretrained(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
    check_tp_size(config, ref.tp_size)


def make_host(ref: ModelRef, num_threads: int) -> Any:
    """A ModelHost (backend hf) or TPModelHost (backend deepspeed) actor handle; release it with close_host.
    The host start_standby began for the same arguments, if any."""
    key = _standby_key(ref, num_threads)
    host = _STANDBY.pop(key, None)
    if host is None:
        return _new_host(ref, num_threads)
    if (loading := _LOADING.pop(key, None)) is not None:  # a host pass_on is loading: its error is this stage's
        try:
            ray.get(loading)
        except BaseException:
            close_host(host)
            raise
    return host


def _new_host(ref: ModelRef, num_threads: int) -> Any:
    if ref.backend == "hf":
        if ref.tp_size != 1:
            raise UserError(f"model.tp_size={ref.tp_size} needs model.backend=deepspeed; set it, or tp_size=1 for hf")
        return ModelHost.options(num_gpus=1 if ref.device == "cuda" else 0).remote(ref.model_dump(mode="json"), num_threads)
    check_cluster(ref)
    check_heads(ref)
    return TPModelHost.remote(ref.model_dump(mode="json"), num_threads)


# Hosts a pipeline starts ahead for its next stage (rayjobs.jobs.pipeline): a host's start is a fresh process
# (imports, tokenizer, weights: 8 s for Gemma 3 270M on 2 cores, minutes for a large model), and started while the
# stage before it generates, the next stage finds it up. Where the cluster has no room for both, Ray starts it once
# the first host is closed, as without. Each is handed out once, to the make_host call with the same arguments.
_STANDBY: dict[str, Any] = {}
_LOADING: dict[str, Any] = {}  # key -> the pending `load` call of a host pass_on handed on


def _standby_key(ref: ModelRef, num_threads: int) -> str:
    # The path as resolved: a stage is given its model through the run's stable links (models/target), the stage
    # that starts its host ahead may see the link or its target.
    path = Path(ref.path).expanduser()
    fields = {**ref.model_dump(mode="json"), "path": str(path.resolve()) if path.exists() else ref.path}
    return json.dumps([fields, num_threads], sort_keys=True)


def start_standby(ref: ModelRef, num_threads: int, beside: ModelRef | None = None) -> bool:
    """Start, now, the host the next make_host(ref, num_threads) returns. With `beside` (the model of the host
    generating meanwhile, on num_threads threads), only where the cluster has a core to spare for the start; False
    when nothing was started (the stage then starts its host itself, as without)."""
    if beside is not None and not core_to_spare(beside, num_threads):
        return False
    key = _standby_key(ref, num_threads)
    if key not in _STANDBY:
        _STANDBY[key] = _new_host(ref, num_threads)
    return True


def core_to_spare(beside: ModelRef, num_threads: int) -> bool:
    """Whether a host's start (a fresh process's imports, tokenizer and weights: CPU work) has a core of its own
    beside a host of `beside` generating on num_threads threads per rank. Without one it only moves time: on
    2 CPUs beside a 2-thread sweep it slowed that sweep's generate calls by what it saved the next (both sweeps
    0.98-1.02x, bench/research/standby_hosts.py); with a core free, 1.09x. A GPU host leaves the CPUs to it."""
    if beside.device == "cuda":
        return True
    return ray.cluster_resources().get("CPU", 0.0) - num_threads * beside.tp_size >= 1


def pass_on(host: Any, held: ModelRef, to: ModelRef | None, num_threads: int) -> bool:
    """Release a stage's host (of `held`, on num_threads threads): load `to` into it for the next
    make_host(to, num_threads), or close it where it cannot carry `to` (both must be one-process HF hosts on the same
    device) or a host for `to` is started already. The load is not waited for: it runs while the stage finishes.
    The process keeps its Ray worker and imports, a fresh host's fixed cost (3.7 s of Gemma 3's 7.8 s start on
    2 cores), and where no core is free to start the next host ahead (core_to_spare), it is the saving left."""
    key = None if to is None else _standby_key(to, num_threads)
    if to is None or key in _STANDBY or not all(r.backend == "hf" and r.tp_size == 1 for r in (held, to)) \
            or held.device != to.device:
        close_host(host)
        return False
    _LOADING[key] = host.load.remote(to.model_dump(mode="json"))
    _STANDBY[key] = host
    return True


def host_origin(ref: ModelRef, num_threads: int) -> str:
    """Where the next make_host(ref, num_threads) takes its host from: "started ahead" (start_standby), "handed on"
    (pass_on) or "fresh"; a stage records it beside the wait for its host."""
    key = _standby_key(ref, num_threads)
    return "handed on" if key in _LOADING else "started ahead" if key in _STANDBY else "fresh"


def close_standby() -> None:
    """Stop the hosts start_standby began or pass_on kept that no stage asked for (a stage failed, or found its
    output done)."""
    _LOADING.clear()
    while _STANDBY:
        close_host(_STANDBY.popitem()[1])


def close_host(host: Any) -> None:
    """Stop a host from make_host; a TP host first frees its ranks' placement group."""
    if hasattr(host, "close"):
        ray.get(host.close.remote())
    ray.kill(host)
