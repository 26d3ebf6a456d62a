"""Hook sites, written like `layers.14.resid_post`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rayjobs.errors import UserError

_SITE = re.compile(r"^layers\.(\d+)\.(resid_post)$")


@dataclass(frozen=True, order=True)
class Site:
    """The output of decoder block `layer` (HF `hidden_states[layer + 1]` for all but the last block)."""

    layer: int
    kind: str = "resid_post"

    def __str__(self) -> str:
        return f"layers.{self.layer}.{self.kind}"


def parse_site(text: str | Site) -> Site:
    if isinstance(text, Site):
        return text
    match = _SITE.match(str(text))
    if not match:
        raise UserError(f"hook site {text!r} is not valid; write it as layers.<l>.resid_post, e.g. layers.3.resid_post")
    return Site(layer=int(match.group(1)), kind=match.group(2))


def check_layer(site: Site, n_layers: int, field: str = "site") -> None:
    if not 0 <= site.layer < n_layers:
        raise UserError(f"{field}: layer {site.layer} is out of range; the model has layers 0..{n_layers - 1}")
