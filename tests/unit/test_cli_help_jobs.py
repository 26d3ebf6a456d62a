"""Help that reads, and the Ray Jobs verbs as a user meets them: readable ids, a header, the newest job by default,
a followed job's final status. The cluster client is replaced (tests/integration/test_submit.py runs a real head)."""

from __future__ import annotations

import datetime as dt
import re
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import cluster as cli_cluster
from cli.main import app
from rayjobs.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
ENV = {"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}


def _verbs(group=None, path=()):
    """Every command path of the app: ('fit',), ('switch', 'scan'), ..."""
    import typer.main

    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _verbs(cmd, (*path, name))
        else:
            yield (*path, name)


def test_no_help_shows_python_type_tags_or_braces() -> None:
    verbs = list(_verbs())
    assert ("switch", "scan") in verbs and ("list",) in verbs
    for verb in [(), *verbs]:
        out = CliRunner().invoke(app, [*verb, "--help"], env=ENV).output
        assert not re.search(r"<(bool|str|int|path|list\[str\])", out) and "{config}" not in out, (verb, out)
        assert "Usage: asit" in out


def test_each_stage_verb_names_its_example_config_and_the_override_syntax() -> None:
    for stage in (s for s in STAGES.values() if s.verb):
        out = " ".join(CliRunner().invoke(app, [*stage.verb, "--help"], env=ENV).output.split())
        assert f"Example: asit {' '.join(stage.verb)} {stage.example} seed=1" in out, out
        assert "key.sub=value" in out and f"Usage: asit {' '.join(stage.verb)} [OPTIONS] CONFIG [KEY.SUB=VALUE ...]" in out
        assert (ROOT / stage.example).is_file()


def test_submission_ids_read_as_config_hash_and_time() -> None:
    from rayjobs.jobs.cluster import job_request, submission_id

    when = dt.datetime(2026, 12, 2, 1, 15, 0, tzinfo=dt.timezone.utc)
    assert submission_id(Path("configs/Demo_v2.yaml"), "3f2a9c1b04de", when) == "asit-demo-v2-3f2a9c1b04de-20261202-011500"
    request = job_request(ROOT / "configs/tiny.yaml", ["seed=3"], "http://10.0.0.5:8265")
    assert re.fullmatch(r"asit-tiny-[0-9a-f]{12}-\d{8}-\d{6}", request["submission_id"])
    assert request["metadata"]["job_name"] == "tiny seed=3"
    assert request["metadata"]["asit_config_hash"] in request["submission_id"]
    env = request["runtime_env"]["env_vars"]  # a job's log is no terminal: plain progress lines, no colour codes
    assert env["ASIT_LIVE_BARS"] == "0" and env["RAY_COLOR_PREFIX"] == "0" and env["ASIT_VERBOSE"] == "0"
    assert request["runtime_env"]["worker_process_setup_hook"] == "rayjobs.console.quiet_process"
    loud = job_request(ROOT / "configs/tiny.yaml", [], "http://10.0.0.5:8265", verbose=True)
    assert " --verbose run " in loud["entrypoint"] and loud["runtime_env"]["env_vars"]["ASIT_VERBOSE"] == "1"


JOBS = [{"job_id": "asit-tiny-aaa-20261202-010000", "status": "RUNNING", "name": "tiny seed=0",
         "entrypoint": "python -m cli.main run configs/tiny.yaml", "start_time": 1_780_000_000_000, "end_time": None},
        {"job_id": "raysubmit_old", "status": "FAILED", "name": "", "entrypoint": "python x.py",
         "start_time": 1_779_000_000_000, "end_time": 1_779_000_075_000}]


@pytest.fixture
def fake_jobs(monkeypatch):
    """rayjobs.jobs.cluster with the cluster's answers replaced; records what each call acted on."""
    calls = []
    fake = types.SimpleNamespace(
        list_jobs=lambda address: JOBS,
        latest=lambda address: JOBS[0]["job_id"],
        status=lambda address, job_id: calls.append(("status", job_id)) or {"status": "RUNNING", "message": ""},
        logs=lambda address, job_id: calls.append(("logs", job_id)) or "stage 1/7: organisms\n",
        follow=lambda address, job_id, write=print: calls.append(("follow", job_id)) or write("log line\n") or "FAILED",
        stop=lambda address, job_id: calls.append(("stop", job_id)) or True,
        submit=lambda config, *args: calls.append(("submit", str(config))) or ("asit-tiny-bbb-20261202-020000", "/p"),
        dashboard_url=lambda address, job_id: f"{address}/#/jobs/{job_id}")
    monkeypatch.setattr(cli_cluster, "_jobs", lambda: fake)
    return calls


def test_list_has_a_header_and_aligned_columns(fake_jobs) -> None:
    lines = CliRunner().invoke(app, ["list"], env=ENV).output.splitlines()
    assert lines[0].split() == ["SUBMISSION", "ID", "STATUS", "STARTED", "TOOK", "NAME"]
    assert lines[1].startswith("asit-tiny-aaa-20261202-010000  RUNNING") and lines[1].endswith("tiny seed=0")
    assert lines[2].startswith("raysubmit_old") and "1m15s" in lines[2] and lines[2].endswith("python x.py")
    assert lines[0].index("STATUS") == lines[1].index("RUNNING") == lines[2].index("FAILED")


def test_status_logs_and_stop_act_on_the_newest_job_by_default(fake_jobs) -> None:
    for verb in ("status", "logs", "stop"):
        result = CliRunner().invoke(app, [verb], env=ENV)
        assert result.exit_code == 0, result.output
        assert "newest job: asit-tiny-aaa-20261202-010000" in result.stderr
    assert fake_jobs == [("status", JOBS[0]["job_id"]), ("logs", JOBS[0]["job_id"]), ("stop", JOBS[0]["job_id"])]
    CliRunner().invoke(app, ["status", "raysubmit_old"], env=ENV)
    assert fake_jobs[-1] == ("status", "raysubmit_old")


def test_followed_logs_end_with_the_final_status(fake_jobs) -> None:
    result = CliRunner().invoke(app, ["logs", "raysubmit_old", "--follow"], env=ENV)
    assert result.stdout.splitlines()[-2:] == ["log line", "raysubmit_old: FAILED"]
    assert result.exit_code == 1


def _checkout(where: Path) -> Path:
    """A second asit checkout (what `is_checkout` looks for) with a config of its own under configs/."""
    (where / "cli").mkdir(parents=True)
    (where / "cli/main.py").write_text("")
    (where / "rayjobs").mkdir()
    (where / "pyproject.toml").write_text('[project]\nname = "asit"\n')
    (where / "configs").mkdir()
    (where / "configs/mine.yaml").write_text((ROOT / "configs/tiny.yaml").read_text())
    return where


def test_submit_uploads_the_project_you_are_in_or_the_one_named(tmp_path, monkeypatch) -> None:
    from rayjobs.errors import UserError
    from rayjobs.jobs.cluster import job_request

    other, address = _checkout(tmp_path / "second checkout"), "http://10.0.0.5:8265"
    monkeypatch.chdir(other / "configs")  # inside the second checkout: it is uploaded, not the one asit runs from
    request = job_request(Path("mine.yaml"), [], address)
    assert request["runtime_env"]["working_dir"] == str(other) == request["metadata"]["asit_project"]
    assert " run configs/mine.yaml" in request["entrypoint"]
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkout that holds the config, or the one --project names
    assert job_request(other / "configs/mine.yaml", [], address)["runtime_env"]["working_dir"] == str(other)
    assert job_request(other / "configs/mine.yaml", [], address, project=other)["runtime_env"]["working_dir"] == str(other)
    with pytest.raises(UserError, match=r"outside .*second checkout, the project uploaded .* pass --project"):
        job_request(ROOT / "configs/tiny.yaml", [], address, project=other)
    with pytest.raises(UserError, match=r"--project: .* is not an asit checkout"):
        job_request(other / "configs/mine.yaml", [], address, project=tmp_path)


def test_submit_says_which_project_it_uploaded(fake_jobs) -> None:
    result = CliRunner().invoke(app, ["submit", "configs/tiny.yaml", "--address", "http://h:8265"], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["project: /p (uploaded as the job's working_dir; its code runs)",
                                          "job: asit-tiny-bbb-20261202-020000",
                                          "dashboard: http://h:8265/#/jobs/asit-tiny-bbb-20261202-020000"]
    assert fake_jobs == [("submit", "configs/tiny.yaml")]
