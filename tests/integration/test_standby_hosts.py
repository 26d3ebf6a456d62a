"""Hosts started ahead (tp_host.start_standby): handed out once to the make_host call with the same arguments,
and stopped by close_standby when no stage asked for them. The pipeline's wiring is in tests/unit/test_pipeline_standby.py."""

from __future__ import annotations

import time

import pytest
import ray
from ray.exceptions import RayActorError

from rayjobs.config import ModelRef
from rayjobs.jobs import tp_host
from tests.unit.tp_models import save_tiny


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    return ModelRef(path=save_tiny("llama", tmp_path_factory.mktemp("standby") / "llama"))


def _actor_id(host) -> str:
    return host._actor_id.hex()


def test_a_standby_host_is_handed_out_once_to_the_same_request(local_ray, ref: ModelRef) -> None:
    tp_host.start_standby(ref, 1)
    tp_host.start_standby(ref, 1)  # asked twice: still one host
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
