"""Scoring steered generations and drawing the figures every stage logs."""

from rayjobs.scoring.steering import choose_layer, layer_generations, layer_sweep, success_rate, sweep_blocks

__all__ = ["choose_layer", "layer_generations", "layer_sweep", "success_rate", "sweep_blocks"]
