"""extract's Ray Data function keeps one CPU model per worker process (the next stage on the same model starts at
once), swaps it for another model, keeps none on a GPU, and sends a worker's UserError back as one record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayjobs.activations import ActivationMeta
from rayjobs.errors import UserError
from rayjobs.jobs import extract_worker


@pytest.fixture
def loads(monkeypatch) -> list[dict]:
    """Every Loaded(...) the worker makes, without loading a model."""
    made: list[dict] = []

    class Fake:
        def __init__(self, ref: dict, num_threads: int) -> None:
            made.append(ref)
            self.model = self.tok = ref["path"]

    monkeypatch.setattr(extract_worker, "Loaded", Fake)
    monkeypatch.setattr(extract_worker, "_WARM", {})
    return made


def test_the_same_model_is_loaded_once_per_process_and_another_replaces_it(loads) -> None:
    a, b = {"path": "a", "device": "cpu"}, {"path": "b", "device": "cpu"}
    first = extract_worker.loaded(a, 2)
    assert extract_worker.loaded(a, 2) is first and loads == [a]
    extract_worker.loaded(b, 2)
    assert loads == [a, b] and len(extract_worker._WARM) == 1  # a was dropped: one model in memory
    extract_worker.loaded(a, 1)  # other thread count: another entry, loaded again
    assert loads == [a, b, a]


def test_a_gpu_model_is_not_kept_by_an_idle_worker(loads) -> None:
    ref = {"path": "g", "device": "cuda"}
    extract_worker.loaded(ref, 1)
    extract_worker.loaded(ref, 1)
    assert loads == [ref, ref] and extract_worker._WARM == {}


def _call(monkeypatch, capture, written_bounds: list | None = None) -> dict:
    meta = ActivationMeta(model_id="m", site="layers.2.resid_post", layer=2, dtype="float32", d_model=4,
                          tokenizer_hash="t").to_dict()
    monkeypatch.setattr(extract_worker, "capture_batch", capture)

    def write(captured, ids, name, metas, dirs, bounds):
        (written_bounds if written_bounds is not None else []).append(bounds)
        return [{"layer": layer, "name": name, "rows": len(ids), "bytes": 1, "sha256": captured, "dir": dirs[layer]}
                for layer in metas]
    monkeypatch.setattr(extract_worker, "write_batch", write)
    batch = {"name": np.array(["part-x.parquet"]), "ids": np.array([[4, 5]], dtype=object),
             "texts": np.array([["t1", "t2"]], dtype=object),
             "bounds": np.array([np.array([[3, 5, 5], [0, 2, 4]])], dtype=object)}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: monkeypatch.setattr(torch, "get_num_threads", lambda: n))
    return extract_worker.extract_batches(batch, ref={"path": "m"}, num_threads=3, metas={"2": meta},
                                          out_dirs={"2": "d"}, max_length=8)


def test_one_record_per_layer_with_ray_datas_string_keys_made_ints(loads, monkeypatch) -> None:
    threads, bounds = [], []
    out = _call(monkeypatch, lambda model, tok, texts, metas, max_length: threads.append(torch.get_num_threads())
                or f"{model}:{'+'.join(texts)}", bounds)
    assert bounds == [[[3, 5, 5], [0, 2, 4]]]  # each text's task-text span goes to the writer (cross-template pairing)
    assert threads == [3]  # the call's own thread count, whatever another task in the worker set before
    assert out == {"layer": [2], "name": ["part-x.parquet"], "rows": [2], "bytes": [1], "sha256": ["m:t1+t2"],
                   "error": [""]}


def test_a_user_error_comes_back_as_one_record(loads, monkeypatch) -> None:
    def capture(*_):
        raise UserError("extract.max_length=8 is shorter than a text of 9 tokens")
    out = _call(monkeypatch, capture)
    assert out["error"] == ["extract.max_length=8 is shorter than a text of 9 tokens"] and out["layer"] == [-1]
