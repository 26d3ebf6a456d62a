"""Residual-stream activations on disk: Parquet shards written atomically, a manifest, a checking reader.

Typical use (one directory per model and site):

    writer = ActivationWriter(out_dir, meta)
    for batch in batches:                      # hidden [batch, pos, d] from interventions.capture
        writer.write_batch(hidden, attention_mask, input_ids, example_ids)
    writer.commit()                            # _manifest.json: the commit record
    acts = read_activations(out_dir)           # Activations(example_id, position, token_id, vectors, meta)
    x, y, n_unpaired = pair_activations(src_acts, tgt_acts)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rayjobs.activations.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from rayjobs.activations.pairing import pair_activations
from rayjobs.activations.reader import Activations, iter_activations, read_activations, verify_activations
from rayjobs.activations.rows import BatchRows, check_finite, rows_from_batch
from rayjobs.activations.schema import SCHEMA_VERSION, ActivationMeta, decode_vectors, vectors_from_table
from rayjobs.activations.writer import ShardInfo, shard_info, shard_name, write_rows, write_shard


class ActivationWriter:
    """Writes one directory's shards and commits them with a manifest. Not for use across processes:
    distributed writers call write_shard themselves and the driver calls write_manifest with their ShardInfos."""

    def __init__(self, directory: str | Path, meta: ActivationMeta, *, checksum: bool = True) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self.checksum = checksum
        self.shards: list[ShardInfo] = []

    def write_batch(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor,
        example_ids: torch.Tensor | np.ndarray | list[int],
        name: str | None = None,
        offsets: torch.Tensor | np.ndarray | None = None,
    ) -> ShardInfo:
        """hidden [batch, pos, d_model] -> one shard of the non-pad rows, named from the example ids by default;
        offsets [batch, pos, 2]: the tokenizer's offset mapping (character spans), when it has one."""
        rows = rows_from_batch(hidden, attention_mask, input_ids, example_ids, offsets)
        info = write_rows(self.directory, name or shard_name(example_ids), rows, self.meta, checksum=self.checksum)
        self.shards.append(info)
        return info

    def commit(self) -> Path:
        return write_manifest(self.directory, self.shards, self.meta)


__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "ActivationMeta",
    "ActivationWriter",
    "Activations",
    "BatchRows",
    "Manifest",
    "ShardInfo",
    "check_finite",
    "decode_vectors",
    "iter_activations",
    "pair_activations",
    "read_activations",
    "read_manifest",
    "rows_from_batch",
    "shard_info",
    "shard_name",
    "vectors_from_table",
    "verify_activations",
    "write_manifest",
    "write_rows",
    "write_shard",
]
