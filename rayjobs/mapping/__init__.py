"""Mappers from a source model's residual stream (d_src) to a target's (d_tgt): build, train, score, save."""

from rayjobs.mapping.io import check_mapper_dims, load_mapper, save_mapper
from rayjobs.mapping.mappers import (
    KINDS,
    AffineMapper,
    AutoencoderMapper,
    Mapper,
    build_mapper,
    default_hidden,
    map_vectors,
)
from rayjobs.mapping.metrics import cosine, evaluate, fvu, mse
from rayjobs.mapping.train import train_mapper

__all__ = [
    "KINDS",
    "AffineMapper",
    "AutoencoderMapper",
    "Mapper",
    "build_mapper",
    "check_mapper_dims",
    "cosine",
    "default_hidden",
    "evaluate",
    "fvu",
    "load_mapper",
    "map_vectors",
    "mse",
    "save_mapper",
    "train_mapper",
]
