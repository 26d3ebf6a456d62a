"""How well a mapper reproduces the target's activations: MSE, cosine, FVU.

All take y (target activations) and y_hat (mapped source activations), both [rows, d_tgt]
(leading dims are flattened), reduce in float64 so large-norm residual streams do not lose
precision, and return Python floats ready for MLflow.
"""

from __future__ import annotations

import numpy as np
import torch

from rayjobs.mapping.mappers import Mapper, as_tensor, map_vectors


def _pair(y: torch.Tensor | np.ndarray, y_hat: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    y, y_hat = as_tensor(y, "y"), as_tensor(y_hat, "y_hat")
    if y.shape != y_hat.shape:
        raise ValueError(f"metrics: y {tuple(y.shape)} and y_hat {tuple(y_hat.shape)} differ in shape")
    d = y.shape[-1]
    return y.reshape(-1, d).double(), y_hat.reshape(-1, d).to(y.device).double()


def mse(y: torch.Tensor | np.ndarray, y_hat: torch.Tensor | np.ndarray) -> float:
    """Mean over all rows and dims of (y - y_hat)^2; the training loss."""
    y, y_hat = _pair(y, y_hat)
    return float(((y - y_hat) ** 2).mean())


def cosine(y: torch.Tensor | np.ndarray, y_hat: torch.Tensor | np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rows of cos(y_i, y_hat_i); a zero row scores 0 (eps guards the division)."""
    y, y_hat = _pair(y, y_hat)
    dots = (y * y_hat).sum(-1)
    norms = (y.norm(dim=-1) * y_hat.norm(dim=-1)).clamp_min(eps)
    return float((dots / norms).mean())


def fvu(y: torch.Tensor | np.ndarray, y_hat: torch.Tensor | np.ndarray) -> float:
    """Fraction of variance unexplained: sum ||y - y_hat||^2 / sum ||y - mean_rows(y)||^2.

    0 is perfect, 1 is what predicting the mean target vector scores. NaN when y has no variance.
    """
    y, y_hat = _pair(y, y_hat)
    resid = ((y - y_hat) ** 2).sum()
    total = ((y - y.mean(dim=0, keepdim=True)) ** 2).sum()
    return float(resid / total) if total > 0 else float("nan")


def evaluate(mapper: Mapper, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> dict[str, float]:
    """{"mse", "cosine", "fvu"} of mapper(x) [rows, d_tgt] against y [rows, d_tgt]."""
    y_hat = map_vectors(mapper, x)
    y = as_tensor(y, "y")
    return {"mse": mse(y, y_hat), "cosine": cosine(y, y_hat), "fvu": fvu(y, y_hat)}
