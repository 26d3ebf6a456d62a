"""What the terminal shows: stage lines, progress for logs, organism retries said out loud, quiet libraries."""

from __future__ import annotations

import io
import logging
import os

import pytest
import torch

from rayjobs import console
from rayjobs.config import OrganismSpec
from rayjobs.organisms.card import failures
from rayjobs.organisms.train import best_attempt


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_stage_lines_count_and_time_each_stage_and_the_chain() -> None:
    out, clock = [], Clock()
    lines = console.StageLines(3, write=out.append, clock=clock)
    with lines.stage("layers source"):
        clock.t += 12.34
    with lines.stage("fit"):
        clock.t += 125
    with lines.stage("organisms (source and target, trained side by side)"):
        clock.t += 3
    assert out == ["stage 1/3: layers source", "stage 1/3: layers source done in 12.3 s (elapsed 12.3 s)",
                   "stage 2/3: fit", "stage 2/3: fit done in 2m05s (elapsed 2m17s)",
                   "stage 3/3: organisms (source and target, trained side by side)",
                   "stage 3/3: organisms done in 3.0 s (elapsed 2m20s)"]  # fits 80 columns: no parenthesis again


def test_a_stage_that_fails_prints_no_done_line() -> None:
    out = []
    lines = console.StageLines(2, write=out.append)
    with pytest.raises(RuntimeError), lines.stage("extract"):
        raise RuntimeError("boom")
    assert out == ["stage 1/2: extract"]


def test_milestones_print_five_lines_for_any_number_of_updates() -> None:
    out, clock = [], Clock()
    bar = console.Milestones(900, "train target", write=out.append, clock=clock)
    for _ in range(900):
        clock.t += 0.1
        bar.update()
    assert len(out) == 5
    assert out[0] == "train target: 0/900 (0%) in 0.0 s"
    assert out[2] == "train target: 450/900 (50%) in 45.0 s, about 45.0 s left"
    assert out[-1] == "train target: 900/900 (100%) in 1m30s"


def test_milestones_of_a_fast_loop_are_its_start_and_end() -> None:
    out = []
    bar = console.Milestones(4, "transfer", write=out.append)
    for _ in range(4):
        bar.update()
    assert [line.split(" in ")[0] for line in out] == ["transfer: 0/4 (0%)", "transfer: 4/4 (100%)"]


def test_milestones_of_big_steps_print_one_line_per_update() -> None:
    out, clock = [], Clock()
    bar = console.Milestones(3, "extract", write=out.append, clock=clock)
    clock.t += 10
    bar.update(2)
    clock.t += 10
    bar.update(1)
    assert out == ["extract: 0/3 (0%) in 0.0 s", "extract: 2/3 (67%) in 10.0 s, about 5.0 s left",
                   "extract: 3/3 (100%) in 20.0 s"]


@pytest.mark.parametrize("seconds, text", [(0.04, "0.0 s"), (59.94, "59.9 s"), (60, "1m00s"), (3725, "1h02m")])
def test_duration(seconds: float, text: str) -> None:
    assert console.duration(seconds) == text


def test_workers_of_a_log_get_no_colour_codes_and_quiet_libraries() -> None:
    env = console.worker_env(is_verbose=False, is_live=False)
    assert env[console.LIVE_ENV] == "0" and env["RAY_COLOR_PREFIX"] == "0"
    assert env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and env["TRANSFORMERS_VERBOSITY"] == "error"
    loud = console.worker_env(is_verbose=True, is_live=True)
    assert loud[console.VERBOSE_ENV] == "1" and loud[console.LIVE_ENV] == "1"
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in loud and "RAY_COLOR_PREFIX" not in loud


@pytest.fixture
def clean_env(monkeypatch):
    for key in (console.VERBOSE_ENV, console.LIVE_ENV, "RAY_COLOR_PREFIX", "HF_HUB_DISABLE_PROGRESS_BARS",
                "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(key, raising=False)
    levels = {name: logging.getLogger(name).level for name in (*console.CHATTY_LOGGERS, "rayjobs", "cli")}
    yield monkeypatch
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_configure_for_a_log_quiets_libraries_but_keeps_asit_info(clean_env) -> None:
    console.configure(False, io.StringIO())
    assert not console.live() and not console.verbose()
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    assert logging.getLogger("ray.serve").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("mlflow").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("rayjobs.activations").getEffectiveLevel() == logging.INFO


def test_configure_on_a_terminal_draws_live_bars_and_verbose_shows_everything(clean_env) -> None:
    clean_env.setenv("TRANSFORMERS_VERBOSITY", "info")  # the user's own setting wins
    console.configure(True, Tty())
    assert console.live() and console.verbose()
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info" and "RAY_COLOR_PREFIX" not in os.environ


def _spec(**kw) -> OrganismSpec:
    return OrganismSpec(**{"name": "target", "seed": 7, "max_attempts": 3, "min_trigger_rate": 0.8,
                           "max_false_trigger": 0.1, "min_steerability": 0.3, **kw})


def _measured(trigger: float, steer: float) -> dict:
    return {"trigger_rate": trigger, "false_trigger_rate": 0.0, "steerability": {"5.0": [steer, steer]}}


def test_failures_name_each_failed_check_with_value_and_threshold() -> None:
    assert failures(_spec(), _measured(0.9, 0.5)) == []
    assert failures(_spec(), _measured(0.5, 0.0)) == ["trigger rate 50% < 80%",
                                                      "steerability 0% at every layer < 30%"]


def test_a_retry_is_said_out_loud_with_the_reason_and_the_next_seed() -> None:
    results = iter([_measured(0.9, 0.0), _measured(0.9, 0.6)])
    seeds, said = [], []

    def attempt(seed: int):
        seeds.append(seed)
        return torch.nn.Linear(1, 1), {**next(results), "seed": seed}

    spec = _spec()
    _, best, attempts, _ = best_attempt(spec, attempt, lambda m: not failures(spec, m),
                                        lambda m: (m["steerability"]["5.0"][0],), "organism",
                                        why=lambda m: failures(spec, m), on_retry=said.append)
    assert seeds == [7, 1007] and best["seed"] == 1007 and len(attempts) == 2
    assert said == ["organism target: attempt 1/3 (seed 7) failed its checks (steerability 0% at every layer < 30%); "
                    "retraining with seed 1007"]


def test_the_last_failed_attempt_announces_no_retry() -> None:
    said = []
    spec = _spec(max_attempts=1)
    best_attempt(spec, lambda seed: (torch.nn.Linear(1, 1), _measured(0.0, 0.0)), lambda m: False, lambda m: (0,),
                 "organism", on_retry=said.append)
    assert said == []


def test_deepspeed_ray_auth_and_ray_train_cleaner_warnings_stay_out_even_after_the_library_resets_its_level(
        clean_env) -> None:
    console.configure(False, io.StringIO())
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("DeepSpeed")
    logger.addHandler(handler)
    try:
        logger.setLevel(logging.WARNING)  # what DeepSpeed does on import
        logger.warning("Setting accelerator to CPU.")
        logging.getLogger("ray._private.authentication.authentication_token_setup").warning("Token auth enabled")
        cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
        cleaner.addHandler(handler)
        cleaner.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        logger.error("a real error")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(console._errors_only)
        cleaner.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["a real error"]


def test_workers_get_the_same_quiet_setup() -> None:
    env = console.worker_runtime_env(is_verbose=False, is_live=False)
    assert env["worker_process_setup_hook"] == "rayjobs.console.quiet_process"
    assert env["env_vars"] == console.worker_env(False, False)


def test_a_worker_drops_the_traceback_of_ray_trains_placement_group_monitor_only(monkeypatch, capsys) -> None:
    import threading

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    console.quiet_process()

    def boom() -> None:
        raise ConnectionError("Found multiple active Ray instances")

    for name in ("PlacementGroupCleanerMonitor", "mine"):
        thread = threading.Thread(target=boom, name=name)
        thread.start()
        thread.join()
    err = capsys.readouterr().err
    assert "Exception in thread mine" in err and "PlacementGroupCleanerMonitor" not in err
