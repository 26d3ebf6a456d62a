"""The one way a mapper is fitted, whichever stage asks: fit, sweep trials, the switch, the refusal experiment.

`fit_mapper` trains one kind on paired rows with a stage's mapper settings (the autoencoder's width applies to
the autoencoder only); `fit_and_save` also writes it as safetensors + mapper.json with its metrics. Mappers
standardise per dimension inside themselves unless told not to (rayjobs.mapping.mappers): real residual
streams need it, and callers see raw activations either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayjobs.mapping.io import save_mapper
from rayjobs.mapping.mappers import Mapper
from rayjobs.mapping.pairs import PairedRows
from rayjobs.mapping.train import Progress, train_mapper


def fit_mapper(kind: str, rows: PairedRows, *, lr: float, epochs: int, batch_size: int, hidden: int | None,
               seed: int, progress: Progress | None = None, standardize: bool = True,
               solver: str = "adamw", lr_schedule: str = "constant") -> tuple[Mapper, dict[str, Any]]:
    """A `kind` mapper trained on `rows`' train split and scored on its val split, and on the held-out rows with
    the attention sinks kept ("val_with_sinks") when they were left out (see train_mapper). `solver` is the affine
    mapper's (lstsq: its closed form); the autoencoder, which has none, always trains with AdamW."""
    return train_mapper(kind, rows.x_train, rows.y_train, rows.x_val, rows.y_val, lr=lr, epochs=epochs,
                        batch_size=batch_size, seed=seed, hidden=hidden if kind == "autoencoder" else None,
                        progress=progress, standardize=standardize, extra_val=rows.extra_val(),
                        solver=solver if kind == "affine" else "adamw", lr_schedule=lr_schedule)


def fit_and_save(kind: str, rows: PairedRows, out_dir: str | Path, meta: dict[str, Any], **params: Any) -> dict[str, Any]:
    """fit_mapper, then the mapper saved in `out_dir` with `meta` and its metrics: {kind, dir, sha256, metrics, params}.

    `params` are fit_mapper's keyword arguments (lr, epochs, batch_size, hidden, seed, standardize, solver,
    lr_schedule)."""
    mapper, metrics = fit_mapper(kind, rows, **params)
    sha = save_mapper(mapper, out_dir, {**meta, "metrics": metrics})
    return {"kind": kind, "dir": str(out_dir), "sha256": sha, "metrics": metrics,
            "params": sum(p.numel() for p in mapper.parameters())}
