"""report: write the Markdown/HTML report of one or more run directories and log it to MLflow.

No Ray: the report only reads JSON the stages committed and draws a few figures. The report directory goes
into the artifacts (under `report/`) of the first run directory's pipeline run when one is found by its tags
(kind pipeline, param run_dir); otherwise into a new standalone `report` run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.preflight.inputs import tracking_uri as check_uri
from rayjobs.preflight.inputs import writable_dir
from rayjobs.report import build_report
from rayjobs.report.collect import missing


def _names(run_dir: str) -> list[str]:
    """How a config may have spelled the run dir: as given, relative to here, absolute."""
    path = Path(run_dir)
    return list(dict.fromkeys([str(path), os.path.relpath(path.resolve()), str(path.resolve())]))


def _track(run_dirs: list[str], directory: Path) -> tuple[str | None, bool]:
    """(run id the report went to, whether that is the pipeline's own run)."""
    for name in _names(run_dirs[0]):
        if (run_id := tracking.find_pipeline_run(name)) is not None:
            tracking.log_artifacts_to(run_id, directory, "report")
            return run_id, True
    with tracking.stage_run("report", {"runs": run_dirs, "out": str(directory)}) as run_id:
        tracking.log_artifact(directory, "report")
    return run_id, False


def run(run_dirs: list[str], out: str | None = None, html: bool = True, log_to_mlflow: bool = True,
        tracking_uri: str | None = None, experiment: str = "asit") -> dict[str, Any]:
    """Build the report into `out` (default `<first run>/report`); returns where it went and what it holds."""
    directory = Path(out) if out else Path(run_dirs[0]) / "report"
    # Checked before anything is written: both failed with a traceback after the report was (issue 16).
    writable_dir(directory, "--out", "reports/demo")
    if log_to_mlflow:
        check_uri(tracking_uri, "--tracking-uri")
    report = build_report(run_dirs, directory, html=html)
    run_id, attached = None, False
    if log_to_mlflow:
        tracking.configure(tracking_uri, experiment, Path(run_dirs[0]).parent)
        run_id, attached = _track(run_dirs, report.directory)
    return {"report": str(report.markdown), "html": None if report.html is None else str(report.html),
            "figures": [str(p) for p in report.figures], "mlflow_run": run_id, "attached_to_pipeline_run": attached,
            "claims": [{"run": c.run, "claim": c.claim, "paper": c.paper, "ours": c.ours, "verdict": c.verdict}
                       for c in report.claims],
            "missing": [{"result": kind, "command": cmd} for kind, cmd in missing(report.runs)]}
