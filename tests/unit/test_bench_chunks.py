"""bench_extract's chunked mode: chunks of whole batches, the median's order-statistic interval, the report's ratios."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from benchcpu import median_ci  # noqa: E402
from extract_chunks import chunk_texts, report_file  # noqa: E402


def test_chunks_are_whole_batches_in_order():
    corpus = [f"t{i}" for i in range(70)]  # 9 batches of 8, the last one of 6
    chunks = chunk_texts(corpus, 8, 4)
    assert sum(chunks, []) == corpus
    assert [len(c) for c in chunks] == [24, 16, 16, 14]  # 3, 2, 2, 2 batches: the short batch stays last
    with pytest.raises(SystemExit, match="--chunks=10"):
        chunk_texts(corpus, 8, 10)


def test_median_interval_by_hand():
    # n=10: P(Bin(10, 1/2) <= 1) = 11/1024, so (x_(2), x_(9)) covers 1 - 22/1024 = 97.9% and (x_(3), x_(8)) 89%
    assert median_ci([float(x) for x in range(10, 0, -1)]) == (5.5, 2.0, 9.0)
    # n=6: only (min, max) reaches 95% (1 - 2/64 = 96.9%); n=5: nothing does (1 - 2/32 = 93.8%)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (3.5, 1.0, 6.0)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None


def test_report_ratios_are_per_chunk(tmp_path, capsys):
    meta = {"what": "m", "machine": "x", "ray_start": 1.0, "cpu": {"driver": 1.0, "ray workers": 0.0, "ray system": 0.0},
            "load": [1.0, 1.0]}
    times = {"plain": [10.0, 20.0], "asit": [5.0, 40.0]}  # asit twice as fast on chunk 0, half as fast on chunk 1
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"chunk": c, "name": n, "s": s[c], "rows": 100, **meta}) + "\n"
                            for n, s in times.items() for c in range(2)))
    report_file(path)
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| path")}
    assert rows["asit"][2].strip() == f"{200 / 45:.0f}"  # tokens/s over the chunks
    assert rows["asit"][5].strip() == "1.25 [0.50, 2.00] (range, n=2)"  # median of 10/5 and 20/40
