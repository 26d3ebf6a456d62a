"""Loading HF causal LMs and finding their decoder blocks."""

from rayjobs.models.blocks import ARCHS, ArchInfo, d_model, get_blocks, n_layers
from rayjobs.models.loading import load_model, load_tokenizer, tokenizer_hash

__all__ = ["ARCHS", "ArchInfo", "d_model", "get_blocks", "n_layers", "load_model", "load_tokenizer", "tokenizer_hash"]
