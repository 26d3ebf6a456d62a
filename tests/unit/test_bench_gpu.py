"""The GPU benchmark's code paths, on a tiny model on the CPU: no session of this project has had a GPU, so
this is what keeps bench/bench_gpu.py runnable for the one that does."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"


def test_every_own_path_runs_and_reports_a_rate(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--shape", "tiny", "--layers", "1", "3",
                          "--batch", "2", "--seq", "32", "--batches", "3", "--skip-peers", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| path")}
    assert set(rows) == {"bare (truncated forward, keeps nothing)", "asit capture (to host)",
                         "asit capture + Parquet write, one thread", "asit extract (write overlaps the next forward)",
                         "plain HF hook + np.save"}
    assert all(float(rate.replace(",", "")) > 0 for rate in rows.values()), rows
    assert list(tmp_path.iterdir()) == []  # its temporary directory is gone


def test_without_cuda_it_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no CUDA device here" in out.stderr
