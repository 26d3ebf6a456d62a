"""Mapper validation (`asit validate`): replacement generation in lockstep, similarity judges, KL, win rates, OOD cost."""

from rayjobs.mapper_validation.generation import MappedSource, OwnMean, recompute_generate_ids, replaced_generate_ids
from rayjobs.mapper_validation.judges import HFJudge, HTTPJudge, Judge, TextJudge

__all__ = ["MappedSource", "OwnMean", "recompute_generate_ids", "replaced_generate_ids",
           "HFJudge", "HTTPJudge", "Judge", "TextJudge"]
