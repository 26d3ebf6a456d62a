"""The prompt format of a model: the instruction template every stage wraps a task prompt in.

An organism fine-tuned from a real checkpoint answers only in the format it was trained in (SmolLM2's chat turn
with its system prompt, Gemma's Alpaca block); its `asit sft` card records that format ("template"). A ModelRef's
`template` names it explicitly; when it is unset the model directory's card supplies it, and a model without a
card (the tiny organisms, a plain checkpoint) is prompted with the raw task prompt, as before.

    template = model_template(ref, tok)          # text with one {prompt}
    prompts = templated(prompts, template)       # what the model is sent
    pre, post = template_parts(template)         # the text around the task prompt
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rayjobs.errors import UserError

# Written by `asit sft` beside the organism's weights (rayjobs.jobs.sft.CARD_NAME); read here without importing
# the Ray job module.
SFT_CARD = "sft_card.json"


def template_problem(value: str) -> str | None:
    """What is wrong with a template (None: exactly one {prompt} slot, or 'chat')."""
    from rayjobs.config.sft import CHAT, PROMPT_SLOT

    if value == CHAT or value.count(PROMPT_SLOT) == 1:
        return None
    return (f"template {value[:60]!r} has {value.count(PROMPT_SLOT)} {PROMPT_SLOT} slots; allowed: a text with "
            f"exactly one {PROMPT_SLOT}, or {CHAT!r} (the model's chat template)")


def check_template(value: str, where: str) -> str:
    """`value` if template_problem finds nothing, else a one-line UserError naming `where`."""
    if (problem := template_problem(value)) is not None:
        raise UserError(f"{where}: {problem}")
    return value


def card_template(path: str) -> str | None:
    """The "template" of the sft card in a local model directory; None without a card or a template in it."""
    card = Path(path) / SFT_CARD
    if not card.is_file():
        return None
    try:
        value = json.loads(card.read_text()).get("template")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{card}: not a readable sft card ({e}); set the model's template explicitly "
                        "(models.*.template) or rewrite the card with `asit sft`") from e
    return None if value is None else check_template(str(value), str(card))


def model_template(ref: Any, tok: Any) -> str:
    """The resolved template (one {prompt}) of a ModelRef: its own, else its card's, else the bare {prompt}."""
    from rayjobs.config.sft import PROMPT_SLOT
    from rayjobs.organisms.sft_data import resolve_template

    template = ref.template if ref.template is not None else card_template(ref.path)
    return PROMPT_SLOT if template is None else resolve_template(template, tok, ref.path)


def templated(prompts: Sequence[str], template: str) -> list[str]:
    """Each prompt inside the template (str.replace: prompts and templates may hold other braces)."""
    from rayjobs.config.sft import PROMPT_SLOT

    return [template.replace(PROMPT_SLOT, p) for p in prompts]


def template_parts(template: str) -> tuple[str, str]:
    """(text before the task prompt, text after it) of a resolved template."""
    from rayjobs.config.sft import PROMPT_SLOT

    pre, post = template.split(PROMPT_SLOT)
    return pre, post


def one_template(source: Any, target: Any, stage: str) -> str:
    """The prompt format two ModelRefs share (tokenizers loaded from their files); a one-line UserError when the
    templates differ, for a stage that feeds one text to both models."""
    from rayjobs.models.loading import load_tokenizer

    src, tgt = (model_template(r, load_tokenizer(r.path, revision=r.revision, trust_remote_code=r.trust_remote_code))
                for r in (source, target))
    if src != tgt:
        raise UserError(f"{stage}: the source and target prompt templates differ ({src[:40]!r} vs {tgt[:40]!r}); "
                        f"{stage} needs one prompt format: set source.template and target.template to the same text, "
                        "or judge the mappers by the transfer stage")
    return src
