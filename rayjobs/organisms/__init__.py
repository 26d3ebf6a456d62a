"""Tiny backdoored organisms trained from scratch: tokenizer, two-phase trainer, card."""

from rayjobs.organisms.card import OrganismCard, load_card
from rayjobs.organisms.spec import OrganismSpec, source_spec, target_spec, tiny_spec
from rayjobs.organisms.tokenizer import train_tokenizer
from rayjobs.organisms.train import CARD_NAME, train_organism

__all__ = [
    "CARD_NAME", "OrganismCard", "OrganismSpec", "load_card", "source_spec", "target_spec", "tiny_spec",
    "train_organism", "train_tokenizer",
]
