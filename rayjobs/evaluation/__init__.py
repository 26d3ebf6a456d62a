"""Scoring steered generations and drawing the figures every stage logs."""

from rayjobs.evaluation.steering import TRIGGER_PAIR, choose_layer, layer_sweep, success_rate

__all__ = ["TRIGGER_PAIR", "choose_layer", "layer_sweep", "success_rate"]
