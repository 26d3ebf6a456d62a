"""Steering vectors: trigger contrast, difference of means, mapped and random baselines."""

from rayjobs.steering.vectors import (
    diff_of_means, last_token_acts, mapped_contrast, mapped_trigger_contrast, random_like, trigger_activations,
    trigger_contrast, vector_cosine,
)

__all__ = ["diff_of_means", "last_token_acts", "mapped_contrast", "mapped_trigger_contrast", "random_like",
           "trigger_activations", "trigger_contrast", "vector_cosine"]
