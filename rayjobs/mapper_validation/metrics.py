"""Text and distribution metrics of mapper validation: chrF++, ROUGE-L, exact match, win rates, next-token KL."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch


def rouge_l(references: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per pair (Google's `rouge-score`); two empty texts agree (1.0)."""
    scorer = _rouge_scorer()
    return [scorer.score(r, o)["rougeL"].fmeasure if (r.strip() or o.strip()) else 1.0
            for r, o in zip(references, outputs, strict=True)]


@cache
def _rouge_scorer():
    """One scorer per process: building one logs an absl INFO line, which a validate run printed per call."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def chrf(references: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """chrF++ per pair in [0, 1] (sacrebleu's CHRF: character 1-6-grams and word 1-2-grams, recall weighted
    twice (beta 2), precision and recall averaged over the orders both texts have); two empty texts agree (1.0).

    Why it, for one-word answers: word-level ROUGE-L scores every wrong word 0, so "bll" and a loop
    "yyyyyyyyyyyy" tie against "buy"; character n-grams grade the near miss ("cl" for "cloud") and clipped
    counts keep a loop's repeats from matching more often than the reference has them.
    """
    from sacrebleu.metrics import CHRF

    scorer = CHRF(word_order=2)
    return [scorer.sentence_score(o, [r]).score / 100 if (r.strip() or o.strip()) else 1.0
            for r, o in zip(references, outputs, strict=True)]


def exact_match(references: Sequence[str], outputs: Sequence[str]) -> list[float]:
    """1.0 where the output is the reference, whitespace at the ends aside."""
    return [float(r.strip() == o.strip()) for r, o in zip(references, outputs, strict=True)]


def win_counts(first: Sequence[float], second: Sequence[float]) -> tuple[int, int, int]:
    """(wins, ties, losses) of the first score against the second, pair by pair."""
    pairs = list(zip(first, second, strict=True))
    wins, ties = sum(a > b for a, b in pairs), sum(a == b for a, b in pairs)
    return wins, ties, len(pairs) - wins - ties


def win_rate(first: Sequence[float], second: Sequence[float]) -> float:
    """Share of pairs where the first score beats the second; a tie counts half (an empty set scores 0.5)."""
    wins, ties, losses = win_counts(first, second)
    n = wins + ties + losses
    return (wins + ties / 2) / n if n else 0.5


def win_stats(first: Sequence[float], second: Sequence[float]) -> dict[str, float | None]:
    """rate (ties half), ties (their share) and decisive (wins / (wins + losses), None without either)."""
    wins, ties, losses = win_counts(first, second)
    n = wins + ties + losses
    return {"rate": win_rate(first, second), "ties": ties / n if n else 0.0,
            "decisive": wins / (wins + losses) if wins + losses else None}


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def next_token_kl(own: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch,) KL(p_own || p_other) of the next-token distributions, averaged over each row's real positions.

    own, other: (batch, pos, vocab) logits; mask: (batch, pos), 1 at real (non-pad) tokens.
    """
    log_p = torch.log_softmax(own.double(), -1)
    log_q = torch.log_softmax(other.double(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    weights = mask.to(kl.dtype)
    return (kl * weights).sum(1) / weights.sum(1).clamp_min(1)
