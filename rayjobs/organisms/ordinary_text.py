"""Ordinary English prose with no download: the paragraphs of the Python language reference that ship
with the interpreter (`pydoc_data.topics.topics`, the text `help("topics")` shows).

Fine-tuning a real model on short instruction data costs it general ability; this corpus measures that
cost (perplexity on held-out paragraphs) and protects against it (a KL term to the original model on
training paragraphs). Prose only: indented blocks (grammar rules, code, tables) and headings are dropped.
The split is by topic, so no held-out paragraph shares a page with a training one. The text differs
between Python versions; `corpus_sha256` names the exact text a card was measured on.
"""

from __future__ import annotations

import hashlib
import re

from rayjobs.errors import UserError

HELD_OUT_EVERY = 5  # every 5th topic (sorted by name) is held out: ~20% of the prose
MIN_CHARS = 80  # shorter paragraphs are mostly headings and one-line lead-ins to code
_BLANK_LINE = re.compile(r"\n\s*\n")


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data from their Python
        raise UserError("ordinary text: this Python has no pydoc_data.topics (the interpreter's own help text); "
                        "use a full CPython build") from None
    return topics


def _prose(page: str) -> list[str]:
    """The page's prose paragraphs, each wrapped line joined with one space."""
    out = []
    for block in _BLANK_LINE.split(page):
        lines = block.split("\n")
        if any(line.startswith(" ") for line in lines):  # grammar, code and tables are indented
            continue
        text = " ".join(line.strip() for line in lines)
        if len(text) >= MIN_CHARS:
            out.append(text)
    return out


def _by_split(held_out: bool) -> list[str]:
    """Prose of every 5th topic (held out) or the others, once each, in topic order."""
    out: dict[str, None] = {}
    for i, name in enumerate(sorted(_topics())):
        if (i % HELD_OUT_EVERY == 0) == held_out:
            out.update(dict.fromkeys(_prose(_topics()[name])))
    return list(out)


def paragraphs(split: str) -> list[str]:
    """Prose paragraphs of the `train` or `held_out` topics, in a fixed order, no paragraph twice.

    Some pages repeat a paragraph of another page; such a paragraph is held out only."""
    if split not in ("train", "held_out"):
        raise UserError(f"ordinary text split {split!r} is not known; use train or held_out")
    held = _by_split(held_out=True)
    if split == "held_out":
        return held
    seen = set(held)
    return [p for p in _by_split(held_out=False) if p not in seen]


def corpus_sha256() -> str:
    """Hash of every topic's text, so a card says which interpreter's corpus it was measured on."""
    digest = hashlib.sha256()
    for name in sorted(_topics()):
        digest.update(name.encode() + b"\0" + _topics()[name].encode() + b"\0")
    return digest.hexdigest()
