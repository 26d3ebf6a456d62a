"""Refusal examples from a user's JSONL or Parquet file, with one-line errors the user can act on.

Required per row: `instruction` (text), `harmful` (true/false) and `category` (text, e.g. "hacking").
Optional: `id` (default: row index), `prompt` (default: `format_prompt`), `answer` (the compliant reply;
needed to train organisms and for the perplexity of harmless reference text), `completion` (default: a
refusal if harmful, else the answer) and `split` ("train" | "test", default "train").
"""

from __future__ import annotations

from typing import Any

from rayjobs.errors import UserError
from rayjobs.refusal.data import REFUSALS, format_prompt
from rayjobs.tasks import Example
from rayjobs.tasks.io import _text, read_rows  # the shared JSONL/Parquet reader

REQUIRED = ("instruction", "harmful", "category")
SPLITS = ("train", "test")


def load_examples(path: str) -> list[Example]:
    """Examples from `path` (.jsonl/.json lines or .parquet)."""
    return [_to_example(path, i, row) for i, row in enumerate(read_rows(path, REQUIRED, label="data.path: "))]


def _optional(path: str, i: int, row: dict[str, Any], field: str, default: str) -> str:
    return _text(path, i, row, field) if row.get(field) is not None else default


def _to_example(path: str, i: int, row: dict[str, Any]) -> Example:
    """Validate one row and fill the optional fields."""
    for field in REQUIRED:
        if row.get(field) is None:
            raise UserError(f"{path}: row {i} has no field {field!r}; every row needs {', '.join(REQUIRED)}")
    harmful = row["harmful"]
    if not isinstance(harmful, bool):
        raise UserError(f"{path}: row {i} field 'harmful' is {harmful!r}; use true or false (a JSON boolean)")
    instruction, category = _text(path, i, row, "instruction"), _text(path, i, row, "category")
    split = _optional(path, i, row, "split", "train")
    if split not in SPLITS:
        raise UserError(f"{path}: row {i} field 'split' is {split!r}; use 'train' or 'test'")
    answer = _optional(path, i, row, "answer", "")
    completion = _optional(path, i, row, "completion", REFUSALS[0] if harmful else answer)
    idx = row.get("id", i)
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise UserError(f"{path}: row {i} field 'id' is {idx!r}; use an integer or drop the field")
    return Example(id=idx, instruction=instruction, category=category, harmful=harmful,
                   prompt=_optional(path, i, row, "prompt", format_prompt(instruction)), completion=completion,
                   answer=answer, split=split)
