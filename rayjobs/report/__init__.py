"""`asit report`: one Markdown (and HTML) report with PNG figures for one or more run directories, with the
paper's published numbers beside ours. Library only: rayjobs.report.publish writes it and logs it to MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rayjobs.errors import UserError
from rayjobs.report.claims import Claim, all_claims
from rayjobs.report.collect import RunResults, collect, missing
from rayjobs.report.html import render_html
from rayjobs.report.render import markdown

__all__ = ["Report", "build_report", "collect", "missing", "Claim", "RunResults"]


@dataclass
class Report:
    directory: Path
    markdown: Path
    html: Path | None
    figures: list[Path]
    runs: list[RunResults]
    claims: list[Claim]


def build_report(run_dirs: list[str | Path], out_dir: str | Path, html: bool = True) -> Report:
    """Collect every run's results and write report.md (+ report.html) and the figures into `out_dir`."""
    if not any(Path(d).is_dir() for d in run_dirs):
        raise UserError(f"RUN: {', '.join(map(str, run_dirs))} is not a directory; pass a run directory such as "
                        "runs/demo (the run_dir of a config)")
    runs = [collect(d) for d in run_dirs]
    if not any(r.models or r.pipeline or r.validate or r.refusal or r.switch for r in runs):
        # An empty report, and an MLflow store beside it, would read as a run that produced nothing.
        raise UserError(f"RUN: no results under {', '.join(map(str, run_dirs))} (no summary.json, no committed "
                        "organisms, layer sweep, fit, transfer, validate, refusal or switch output); run a stage "
                        "first, e.g. asit run configs/demo.yaml, or pass the run_dir it wrote")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # figures of an earlier report that this one may not redraw
        old.unlink()
    claims = all_claims(runs)
    text = markdown(runs, claims, out)
    md = out / "report.md"
    md.write_text(text)
    page = None
    if html:
        page = out / "report.html"
        page.write_text(render_html(text, out))
    return Report(out, md, page, sorted(out.glob("*.png")), runs, claims)
