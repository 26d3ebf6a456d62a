"""Checks every stage runs before it starts Ray or an MLflow run: models, layers, task data, mappers, resources.

`inputs` checks one input (a model from its config and tokenizer, layers, the task's rows, a mapper); `stages`
has the check of each stage, named by its row in rayjobs.stages and run by the stage runner.
"""

from rayjobs.preflight.inputs import (
    examples, judge, layers, mappers, model, resources, same_tokenizer, site_dir, steering, task_rows,
)
from rayjobs.preflight.stages import (
    extract, fit, layers_stage, organisms, pipeline, refusal, refusal_data, sft, switch, switch_serve, sweep, transfer, validate,
    validate_inputs, with_layers,
)

__all__ = ["examples", "extract", "fit", "judge", "layers", "layers_stage", "mappers", "model", "organisms", "pipeline",
           "refusal", "refusal_data", "resources", "same_tokenizer", "sft", "site_dir", "steering", "switch",
           "switch_serve", "sweep", "task_rows", "transfer", "validate", "validate_inputs", "with_layers"]
