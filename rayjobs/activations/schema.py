"""Parquet layout of residual-stream activations: columns, key-value metadata, vector encoding.

One row per non-pad token: example_id (int64), position (int32, 0 = first real token), token_id (int32),
since schema version 2 the token's character span in its text, char_start and char_end (int32, from the
fast tokenizer's offset mapping; -1 when the tokenizer gives none), and `vector`, the d_model values as
raw little-endian bytes in `fixed_size_binary(itemsize * d_model)`. Version 1 files (no spans) still read.
Spans are what pair rows across tokenizers (rayjobs.activations.pairing): the same character offset of
the same text, whatever the tokens.
Raw bytes rather than `fixed_size_list<float16>` because Parquet writes the list layout 10-30x slower
(repetition levels per value), and because Arrow has no bfloat16: bf16 is stored bit-exactly instead of
being cast to fp16, which would overflow above 65504.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from rayjobs.errors import UserError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
VECTOR_COLUMN = "vector"
ID_COLUMNS = ("example_id", "position", "token_id")
SPAN_COLUMNS = ("char_start", "char_end")  # schema version >= 2
NO_SPAN = -1  # char_start = char_end = -1: the tokenizer gave no offsets (a slow tokenizer)
META_PREFIX = "asit."
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# The bytes on disk are the in-memory bytes; a big-endian host would write a different format.
assert sys.byteorder == "little", "asit activation files assume a little-endian host"


@dataclass(frozen=True)
class ActivationMeta:
    """What a directory of activations holds: which model, which hook site, how the vectors are stored."""

    model_id: str
    site: str
    layer: int
    dtype: str
    d_model: int
    tokenizer_hash: str
    revision: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"activation dtype: {self.dtype!r} is not one of {sorted(DTYPES)}; fix the storage dtype")
        if self.d_model <= 0:
            raise UserError(f"activation d_model: {self.d_model} must be > 0")
        if self.schema_version not in READABLE_VERSIONS:
            raise UserError(f"activation schema_version {self.schema_version}: this asit reads {READABLE_VERSIONS}; "
                            "written by a newer asit? upgrade asit")

    @property
    def has_spans(self) -> bool:
        """Whether rows carry their character spans (schema version >= 2)."""
        return self.schema_version >= 2

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def row_bytes(self) -> int:
        """Width of one encoded vector in bytes (itemsize * d_model)."""
        return self.torch_dtype.itemsize * self.d_model

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ActivationMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"activation metadata: unknown keys {unknown}; written by a newer asit? upgrade asit")
        return cls(**data)

    def to_kv(self) -> dict[bytes, bytes]:
        """Parquet schema key-value metadata; every value a string so plain pyarrow users can read it."""
        return {
            (META_PREFIX + k).encode(): ("" if v is None else str(v)).encode() for k, v in self.to_dict().items()
        }

    @classmethod
    def from_kv(cls, kv: dict[bytes, bytes] | None, where: str) -> ActivationMeta:
        kv = kv or {}
        raw = {k.decode()[len(META_PREFIX) :]: v.decode() for k, v in kv.items() if k.startswith(META_PREFIX.encode())}
        try:
            return cls(
                model_id=raw["model_id"],
                site=raw["site"],
                layer=int(raw["layer"]),
                dtype=raw["dtype"],
                d_model=int(raw["d_model"]),
                tokenizer_hash=raw["tokenizer_hash"],
                revision=raw.get("revision") or None,
                schema_version=int(raw["schema_version"]),
            )
        except (KeyError, ValueError) as e:
            raise UserError(f"{where}: not an asit activation file (metadata {e} missing or bad)") from None


def arrow_schema(meta: ActivationMeta) -> pa.Schema:
    """The Arrow schema of a shard, metadata included (span columns from schema version 2)."""
    fields = [
        pa.field("example_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        *[pa.field(name, pa.int32(), nullable=False) for name in (SPAN_COLUMNS if meta.has_spans else ())],
        pa.field(VECTOR_COLUMN, pa.binary(meta.row_bytes), nullable=False),
    ]
    return pa.schema(fields, metadata=meta.to_kv())


def encode_vectors(vectors: torch.Tensor) -> pa.FixedSizeBinaryArray:
    """[rows, d] CPU tensor -> fixed_size_binary array sharing the tensor's memory (no copy)."""
    vectors = vectors.contiguous()
    rows, d = vectors.shape
    raw = vectors.view(torch.uint8).numpy()  # bf16 has no numpy dtype; bytes do
    width = vectors.element_size() * d
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, pa.py_buffer(raw)])


def decode_vectors(column: pa.ChunkedArray | pa.Array, dtype: str, d_model: int) -> torch.Tensor:
    """fixed_size_binary column -> [rows, d_model] tensor of `dtype` (one copy, into fresh memory)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = DTYPES[dtype].itemsize * d_model
    if column.type != pa.binary(width):
        raise UserError(f"vector column: type {column.type} does not match {dtype} x {d_model}; metadata is wrong")
    out = np.empty(len(column) * width, dtype=np.uint8)
    start = 0
    for chunk in chunks:
        if chunk.null_count:
            raise UserError("vector column: has nulls; the file was not written by asit")
        data = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        n = len(chunk) * width
        out[start : start + n] = data[chunk.offset * width : chunk.offset * width + n]
        start += n
    return torch.from_numpy(out).reshape(len(column), width).view(DTYPES[dtype])


def vectors_from_table(table: pa.Table) -> torch.Tensor:
    """Decode the vector column of a table read with plain `pyarrow.parquet.read_table` -> [rows, d_model]."""
    meta = ActivationMeta.from_kv(table.schema.metadata, "table")
    return decode_vectors(table.column(VECTOR_COLUMN), meta.dtype, meta.d_model)
