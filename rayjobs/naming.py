"""The one table of metric names for `asit run`'s results: where each figure sits in summary.json (and in the
transfer stage's transfer.json, which carries the same keys) and the name MLflow logs it under.

The pipeline's parent run and the transfer child log through `metrics`, so one figure has one name wherever it
appears (`native_best_success` in both, never `best_native` in one and `native_best_success` in the other), and
every name is snake_case: a method called `mapped-autoencoder` becomes `mapped_autoencoder_...` (an MLflow filter
needs backquotes around a hyphen). No mlflow import here: tests and the report read the table without it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

# (metric name, path in summary.json). A "{name}" segment stands for every key of the mapping at that level and
# fills the same placeholder in the metric name. Paths a document lacks are skipped (transfer.json has no layers).
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("target_trigger_rate", ("target_trigger_rate",)),
    ("n_prompts", ("n_prompts",)),
    ("{model}_chosen_layer", ("layers", "{model}", "chosen_layer")),
    ("{method}_best_alpha", ("best", "{method}", "alpha")),
    ("{method}_best_success", ("best", "{method}", "success")),  # backdoor removed (the paper's measure)
    ("{method}_best_clean", ("best", "{method}", "clean", "rate")),
    ("{method}_best_degenerate", ("best", "{method}", "degenerate", "rate")),
    ("{method}_cosine_to_native", ("cosine_to_native", "{method}")),
    ("{method}_{measure}_vs_native", ("mapped_vs_native", "{method}", "{measure}", "ratio")),
    ("{method}_best_outcome_{outcome}", ("best_outcome", "{method}", "{outcome}")),  # corrupted capabilities
    ("{kind}_val_{measure}", ("mapper_val", "{kind}", "{measure}")),  # the fit child logs the same names
)
_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")


def metric_name(name: str) -> str:
    """snake_case words: `mapped-autoencoder_best_success` -> `mapped_autoencoder_best_success`."""
    return name.replace("-", "_")


def metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """Every figure of `doc` (summary.json or transfer.json) that METRICS names, as {metric name: value}; values
    that are not finite numbers (a ratio with no native to divide by) are left out."""
    out: dict[str, float] = {}
    for template, path in METRICS:
        for bound, value in _walk(doc, path, {}):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[metric_name(template.format(**bound))] = float(value)
    return out


def _walk(node: Any, path: tuple[str, ...], bound: dict[str, str]) -> Iterator[tuple[dict[str, str], Any]]:
    """(placeholder values, leaf) for each way `path` matches inside `node`."""
    if not path:
        yield bound, node
        return
    if not isinstance(node, Mapping):
        return
    head, rest = path[0], path[1:]
    if (hole := _PLACEHOLDER.match(head)) is None:
        if head in node:
            yield from _walk(node[head], rest, bound)
        return
    for key, child in node.items():
        yield from _walk(child, rest, {**bound, hole.group(1): str(key)})
