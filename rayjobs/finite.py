"""NaN/Inf checks for values a stage is about to trust or hand on: mapper weights and metrics, steering
vectors, logits. A NaN compares False with everything, so without these it flows on silently: a NaN mapper
was published with NaN metrics, and its transfer scored 100% success (issue 16)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from rayjobs.errors import UserError


def bad_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or +-Inf, each with how many of its values do."""
    out = []
    for name, t in tensors.items():
        if t.is_floating_point() or t.is_complex():
            n = int((~torch.isfinite(t.detach())).sum())
            if n:
                out.append(f"{name} ({n} of {t.numel()} values)")
    return out


def require_finite(tensors: Mapping[str, torch.Tensor], what: str, fix: str) -> None:
    """UserError naming `what` and its non-finite tensors, with `fix`, unless every value is finite."""
    bad = bad_tensors(tensors)
    if bad:
        raise UserError(f"{what}: NaN/Inf in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; {fix}")


def _numbers(value: Any, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}.{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)
    elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        yield path, float(value.item())


def require_finite_numbers(values: Mapping[str, Any], what: str, fix: str) -> None:
    """UserError naming the first non-finite number in a (nested) mapping of metrics, unless all are finite."""
    bad = [(path, v) for path, v in _numbers(values, "") if not math.isfinite(v)]
    if bad:
        shown = ", ".join(f"{path}={v}" for path, v in bad[:3])
        raise UserError(f"{what}: {shown}{' ...' if len(bad) > 3 else ''} (NaN/Inf); {fix}")
