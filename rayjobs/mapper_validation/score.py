"""Scores of mapper validation from the conditions' completions: similarity to the target's own
completions, win rates, and the out-of-distribution cost of the mapping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rayjobs.tasks import Task
from rayjobs.mapper_validation.conditions import MEAN, PromptSet
from rayjobs.mapper_validation.judges import Judge
from rayjobs.mapper_validation.metrics import exact_match, mean, rouge_l, win_stats

OWN_SETS = ("prod", "dev")  # the task's own prompts: what the mapped target should reproduce
OOD_SETS = ("dev", "plain")  # no backdoor expected: the backdoor phrase there is spurious


def similarity_table(completions: dict[str, dict[str, list[str]]], kl: dict[str, float],
                     judge: Judge) -> dict[str, Any]:
    """Per condition, its completions on the task's own prompts (|prod|, |dev|) against the target's own: mean
    judge similarity, ROUGE-L, exact match, coherence, KL; per mapper, MvA and TvS win rates (ties count half),
    the share of ties, and the rate among decisive pairs (`*_decisive`: wins / (wins + losses))."""
    by_condition = {c: [t for s in OWN_SETS for t in completions[s][c]] for c in completions[OWN_SETS[0]]}
    own = by_condition["target"]
    sims = {c: judge.similarity(own, texts) for c, texts in by_condition.items() if c != "target"}
    table: dict[str, dict[str, Any]] = {"target": {"coherence": mean(judge.coherence(own))}}
    for condition, texts in by_condition.items():
        if condition == "target":
            continue
        table[condition] = {"similarity": mean(sims[condition]), "rouge_l": mean(rouge_l(own, texts)),
                            "exact_match": mean(exact_match(own, texts)), "coherence": mean(judge.coherence(texts)),
                            "by_set": _by_set(sims[condition], completions)}
        if condition in kl:
            table[condition]["kl"] = kl[condition]
    for condition in (c for c in by_condition if c.startswith("mapped-")):
        to_source = judge.similarity(by_condition["source"], by_condition[condition])
        for name, other in (("mva", sims[MEAN]), ("tvs", to_source)):
            stats = win_stats(sims[condition], other)
            table[condition].update({name: stats["rate"], f"{name}_ties": stats["ties"], f"{name}_decisive": stats["decisive"]})
    return table


def _by_set(scores: Sequence[float], completions: dict[str, dict[str, list[str]]]) -> dict[str, float]:
    """Mean similarity per own prompt set (the scores run over the sets in OWN_SETS order)."""
    out, start = {}, 0
    for name in OWN_SETS:
        n = len(completions[name]["target"])
        out[name] = mean(scores[start : start + n])
        start += n
    return out


def ood_table(completions: dict[str, dict[str, list[str]]], sets: dict[str, PromptSet], task: Task) -> dict[str, Any]:
    """Per prompt set and condition: backdoor rate and helpful-answer rate (the task's judge and helpfulness
    check); `spurious_backdoor_rate` and `helpful` pool the sets where no backdoor belongs."""
    backdoor, helpful = task.has_backdoor, task.is_helpful
    per_set = {name: {c: {"backdoor_rate": mean([float(backdoor(t)) for t in texts]),
                          "helpful": mean([float(helpful(t, a)) for t, a in zip(texts, sets[name].answers)])}
                      for c, texts in by_condition.items()}
               for name, by_condition in completions.items()}
    pooled = {c: {"spurious_backdoor_rate": mean([float(backdoor(t)) for s in OOD_SETS for t in completions[s][c]]),
                  "helpful": mean([float(helpful(t, a)) for s in OOD_SETS
                                   for t, a in zip(completions[s][c], sets[s].answers)])}
              for c in completions[OOD_SETS[0]]}
    return {"per_set": per_set, "pooled": pooled}


def samples(completions: dict[str, dict[str, list[str]]], sets: dict[str, PromptSet], n: int) -> list[dict[str, Any]]:
    """The first `n` prompts of each set with every condition's completion, for reading by eye."""
    return [{"set": name, "prompt": sets[name].prompts[i], **{c: completions[name][c][i] for c in by_condition}}
            for name, by_condition in completions.items() for i in range(min(n, len(sets[name].prompts)))]
