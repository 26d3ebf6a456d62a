"""Hook sites and intervention specs (capture, add, ablate, replace, map_replace) applied by self-removing hooks."""

from rayjobs.interventions.hooks import apply
from rayjobs.interventions.run import (
    Generated, NonFiniteRows, capture, encode, generate, generate_flagged, generate_ids, logits, position_ids,
    span_trigger_mask, trigger_mask,
)
from rayjobs.interventions.sites import Site, check_layer, parse_site
from rayjobs.interventions.specs import Ablate, Add, Capture, MapReplace, Replace, Spec, from_dict, to_dict

__all__ = [
    "apply", "Generated", "NonFiniteRows", "capture", "encode", "generate", "generate_flagged", "generate_ids", "logits",
    "position_ids", "span_trigger_mask", "trigger_mask",
    "Site", "check_layer", "parse_site", "Ablate", "Add", "Capture", "MapReplace", "Replace", "Spec", "from_dict", "to_dict",
]
