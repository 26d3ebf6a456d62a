"""The source -> target mapper of the refusal experiment, fitted on activations captured in memory.

Both models run the same train-split texts (prompt + completion); with a shared tokenizer the same
position is the same token, so every non-pad position is one (x, y) row, as the extract + fit stages
would pair them from Parquet. Held-out rows come from held-out texts. Training is
`rayjobs.mapping.fit.fit_mapper`, the one every stage fits its mappers with.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.interventions.run import capture, encode
from rayjobs.mapping.pairs import PairedRows
from rayjobs.refusal.directions import site


def check_same_tokenizer(tok_src: PreTrainedTokenizerBase, tok_tgt: PreTrainedTokenizerBase) -> None:
    if tok_src.get_vocab() != tok_tgt.get_vocab():
        raise UserError("models.source and models.target have different tokenizers; the refusal mapper pairs "
                        "activations by position and needs one shared tokenizer (use a model pair from one family)")


@torch.no_grad()
def token_acts(model: nn.Module, tok: PreTrainedTokenizerBase, texts: Sequence[str], layer: int,
               batch_size: int = 64) -> list[torch.Tensor]:
    """Per text, (n_tokens, d) residual stream at block `layer` over its non-pad tokens."""
    tok.padding_side = "left"
    out: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        enc = encode(tok, texts[start:start + batch_size])
        acts = capture(model, enc["input_ids"], enc["attention_mask"], [site(layer)])[site(layer)]
        out += [a[m.bool()].float() for a, m in zip(acts, enc["attention_mask"])]
    return out


def paired_rows(src: nn.Module, tgt: nn.Module, tok: PreTrainedTokenizerBase, texts: Sequence[str],
                source_layer: int, target_layer: int, val_frac: float, seed: int,
                batch_size: int = 64) -> PairedRows:
    """Train and val rows (n, d_src) / (n, d_tgt); validation texts are a seeded `val_frac` of texts."""
    xs = token_acts(src, tok, texts, source_layer, batch_size)
    ys = token_acts(tgt, tok, texts, target_layer, batch_size)
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(len(texts) * val_frac))
    val, train = order[:n_val], order[n_val:]
    if not train:
        raise UserError(f"mapper.n_texts: {len(texts)} texts leave none for training after val_frac={val_frac}; use more")
    return PairedRows(torch.cat([xs[i] for i in train]), torch.cat([ys[i] for i in train]),
                      torch.cat([xs[i] for i in val]), torch.cat([ys[i] for i in val]))
