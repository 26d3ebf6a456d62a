"""Mappers f: source residual stream (d_src) -> target residual stream (d_tgt).

Two kinds, as in Oozeer et al. 2025: an affine map, and the paper's autoencoder
Linear(d_src, h) -> ReLU -> Linear(h, d_tgt) with h = int(sqrt(d_src * d_tgt)).

Either may standardise per dimension inside itself (standardize=True): the core sees
(x - in_mean) / in_scale and its output is mapped back with out_scale and out_mean, all four stored as
buffers in the mapper's safetensors. Callers always see raw activation spaces, so a mapped steering
vector f(h_dev) - f(h_prod) is in the target's units; only the core's training is in unit scale, which
real residual streams (norms in the thousands, a few dimensions 30x the rest) need and tiny organisms
do not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rayjobs.errors import UserError

KINDS = ("affine", "autoencoder")


def default_hidden(d_in: int, d_out: int) -> int:
    """The paper's bottleneck width: the geometric mean of the two widths, rounded down."""
    return int(math.sqrt(d_in * d_out))


def _check_dim(name: str, value: object) -> int:
    # bool is an int subclass; a True width is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"mapper.{name}: got {value!r}; must be a positive integer (a residual width)")
    return value


class _Standardizing(nn.Module):
    """forward(x) = destandardize(core(standardize(x))); without standardisation, forward = core."""

    d_in: int
    d_out: int

    def _init_standardization(self, standardize: bool) -> None:
        self.standardize = bool(standardize)
        if self.standardize:
            self.register_buffer("in_mean", torch.zeros(self.d_in))
            self.register_buffer("in_scale", torch.ones(self.d_in))
            self.register_buffer("out_mean", torch.zeros(self.d_out))
            self.register_buffer("out_scale", torch.ones(self.d_out))

    def core(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_standardization(self, in_mean: torch.Tensor, in_scale: torch.Tensor, out_mean: torch.Tensor,
                            out_scale: torch.Tensor) -> None:
        """Per-dimension means and scales (> 0) of the inputs [d_in] and targets [d_out]."""
        if not self.standardize:
            raise ValueError("set_standardization on a mapper built with standardize=False")
        for name, value in (("in_mean", in_mean), ("in_scale", in_scale), ("out_mean", out_mean), ("out_scale", out_scale)):
            getattr(self, name).copy_(value)

    def standardize_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_scale if self.standardize else x

    def standardize_target(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.out_mean) / self.out_scale if self.standardize else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return self.core(x)
        return self.core(self.standardize_input(x)) * self.out_scale + self.out_mean


class AffineMapper(_Standardizing):
    """y = x W^T + b. Input [..., d_in] -> output [..., d_out]."""

    kind = "affine"

    def __init__(self, d_in: int, d_out: int, standardize: bool = False) -> None:
        super().__init__()
        self.d_in, self.d_out = _check_dim("d_in", d_in), _check_dim("d_out", d_out)
        self.hidden: int | None = None
        self.linear = nn.Linear(self.d_in, self.d_out, bias=True)
        self._init_standardization(standardize)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class AutoencoderMapper(_Standardizing):
    """Linear(d_in, hidden) -> ReLU -> Linear(hidden, d_out). Input [..., d_in] -> [..., d_out]."""

    kind = "autoencoder"

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, standardize: bool = False) -> None:
        super().__init__()
        self.d_in, self.d_out = _check_dim("d_in", d_in), _check_dim("d_out", d_out)
        h = default_hidden(self.d_in, self.d_out) if hidden is None else hidden
        self.hidden = _check_dim("hidden", h)
        self.encoder = nn.Linear(self.d_in, self.hidden, bias=True)
        self.decoder = nn.Linear(self.hidden, self.d_out, bias=True)
        self._init_standardization(standardize)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x)))


Mapper = AffineMapper | AutoencoderMapper


def build_mapper(kind: str, d_in: int, d_out: int, hidden: int | None = None, standardize: bool = False) -> Mapper:
    """A freshly initialised mapper of `kind` ("affine" | "autoencoder"); uses the global torch RNG."""
    if kind == "affine":
        if hidden is not None:
            raise UserError(f"mapper.hidden: got {hidden!r} for kind 'affine'; only 'autoencoder' has one, drop it")
        return AffineMapper(d_in, d_out, standardize)
    if kind == "autoencoder":
        return AutoencoderMapper(d_in, d_out, hidden, standardize)
    raise UserError(f"mapper.kind: got {kind!r}; allowed: {', '.join(KINDS)}")


def as_tensor(x: torch.Tensor | np.ndarray, name: str = "x") -> torch.Tensor:
    """Accept what the activation reader returns (numpy or torch) without copying when possible."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _param(mapper: nn.Module) -> torch.Tensor:
    return next(mapper.parameters())


@torch.no_grad()
def map_vectors(
    mapper: Mapper,
    h: torch.Tensor | np.ndarray,
    *,
    out_dtype: torch.dtype | None = None,
    chunk_rows: int = 65536,
) -> torch.Tensor:
    """Push source activations h [..., d_src] through the mapper -> [..., d_tgt].

    Map activations, not differences: f is nonlinear (autoencoder) and affine maps carry a bias,
    so a transferred steering vector is f(h_dev) - f(h_prod), never f(h_dev - h_prod).
    Computes in the mapper's dtype/device (fp16 or bf16 inputs are upcast, so differences of
    outputs keep float32 precision) and returns on the input's device, in `out_dtype` if given,
    else the mapper's dtype. Rows go through in chunks to bound peak memory.
    """
    h = as_tensor(h, "h")
    if h.ndim == 0 or h.shape[-1] != mapper.d_in:
        raise UserError(
            f"mapper input: last dim is {tuple(h.shape)[-1:] or '()'} but the mapper expects d_src={mapper.d_in}; "
            "check that the activations come from the mapper's source model and site"
        )
    p = _param(mapper)
    flat = h.reshape(-1, mapper.d_in)
    out = [
        mapper(flat[i : i + chunk_rows].to(p.device, p.dtype)).to(h.device)
        for i in range(0, flat.shape[0], chunk_rows)
    ]
    y = torch.cat(out) if out else flat.new_zeros((0, mapper.d_out), dtype=p.dtype)
    y = y.reshape(*h.shape[:-1], mapper.d_out)
    return y if out_dtype is None else y.to(out_dtype)
