"""The pipeline starts the target sweep's host during the source sweep (tp_host.start_standby), only when the target
sweep will run, and stops any host left over before extract (whose workers need the CPUs), even when a sweep fails."""

from __future__ import annotations

from typing import Any

import pytest

from rayjobs.config import PipelineConfig
from rayjobs.jobs import pipeline


class Stop(Exception):
    """Ends the chain after the sweeps: what follows needs real stages."""


def _chain(monkeypatch: pytest.MonkeyPatch, done: set[str], fail: str | None = None) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    def run_stage(stage: str, cfg: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append((f"{stage} {getattr(cfg, 'name', '')}".strip(), kwargs.get("standby")))
        if stage != "layers":
            raise Stop
        if cfg.name == fail:
            raise RuntimeError(f"{cfg.name} sweep failed")
        return {"chosen_layer": 1}

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "is_done", lambda stage, cfg: f"{stage} {cfg.name}" in done)
    monkeypatch.setattr(pipeline, "close_standby", lambda: calls.append(("close_standby", None)))
    cfg = PipelineConfig(run_dir="r", models={"source": {"path": "src"}, "target": {"path": "tgt"}})
    with pytest.raises(Stop if fail is None else RuntimeError):
        pipeline.stages(cfg)
    return calls


def test_the_target_host_starts_during_the_source_sweep_and_leftovers_stop_before_extract(monkeypatch) -> None:
    calls = _chain(monkeypatch, done=set())
    assert [name for name, _ in calls] == ["layers source", "layers target", "close_standby", "extract source"]
    assert [ref.path for ref in calls[0][1]] == ["tgt"] and calls[1][1] == ()


def test_no_host_is_started_ahead_for_a_sweep_that_is_done(monkeypatch) -> None:
    calls = _chain(monkeypatch, done={"layers target"})
    assert calls[0] == ("layers source", ()) and ("close_standby", None) in calls


def test_a_failed_sweep_still_stops_the_host_started_ahead(monkeypatch) -> None:
    calls = _chain(monkeypatch, done=set(), fail="source")
    assert [name for name, _ in calls] == ["layers source", "close_standby"]
