"""ExtractHost overlaps one batch's writes with the next batch's forward (two concurrent Ray Data calls per
actor), keeps one forward and one batch of writes at a time, and returns each call its own records."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rayjobs.activations import ActivationMeta
from rayjobs.jobs import hosts


def _host(monkeypatch) -> hosts.ExtractHost:
    monkeypatch.setattr(hosts.Loaded, "__init__", lambda self, ref, num_threads: None)  # no model to load
    metas = {layer: ActivationMeta(model_id="m", site=f"layers.{layer}.resid_post", layer=layer, dtype="float32",
                                   d_model=4, tokenizer_hash="t").to_dict() for layer in (2, 3)}
    host = hosts.ExtractHost({}, 1, metas, {2: "unused", 3: "unused"}, 64)
    host.model = host.tok = None  # capture and write are replaced in the test
    return host


def test_next_forward_runs_while_the_previous_batch_is_written(monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    busy = {"forward": 0, "write": 0}
    guard = threading.Lock()
    # A rendezvous: b's forward and a's write each wait for the other to have started, so they can only
    # both finish if they run at the same time.
    second_forward_started, first_write_started = threading.Event(), threading.Event()

    def enter(kind: str, batch: str) -> None:
        with guard:
            busy[kind] += 1
            events.append((kind, batch))
            assert busy[kind] == 1, f"two {kind}s at once"

    def leave(kind: str) -> None:
        with guard:
            busy[kind] -= 1

    def capture_batch(model, tok, texts, metas, max_length):
        enter("forward", texts[0])
        if texts[0] == "b":
            second_forward_started.set()
            assert first_write_started.wait(timeout=5), "the previous batch was not written during this forward"
        leave("forward")
        return texts[0]

    def write_batch(captured, ids, name, metas, out_dirs, bounds):
        enter("write", captured)
        if captured == "a":
            first_write_started.set()
            assert second_forward_started.wait(timeout=5), "the next forward did not start during this write"
        leave("write")
        return [{"layer": layer, "name": name, "rows": len(ids), "bytes": 1, "sha256": captured} for layer in metas]

    monkeypatch.setattr(hosts, "capture_batch", capture_batch)
    monkeypatch.setattr(hosts, "write_batch", write_batch)
    host = _host(monkeypatch)

    def call(text: str, n: int) -> dict:
        return host({"name": np.array([f"part-{text}.parquet"]), "ids": np.array([list(range(n))], dtype=object),
                     "texts": np.array([[text]], dtype=object), "bounds": np.array([[[0, 1, 1]]], dtype=object)})

    with ThreadPoolExecutor(hosts.ExtractHost.CONCURRENT_CALLS) as pool:
        first = pool.submit(call, "a", 3)
        while not events:  # a starts first, so the overlap asserted above is a's write with b's forward
            time.sleep(0.001)
        second = pool.submit(call, "b", 5)
        out_a, out_b = first.result(), second.result()
    assert out_a == {"layer": [2, 3], "name": ["part-a.parquet"] * 2, "rows": [3, 3], "bytes": [1, 1], "sha256": ["a", "a"],
                     "error": ["", ""]}
    assert out_b["name"] == ["part-b.parquet"] * 2 and out_b["rows"] == [5, 5] and out_b["sha256"] == ["b", "b"]
    # b's forward and a's write may log in either order; each batch's forward comes before its write.
    assert events[0] == ("forward", "a") and events[-1] == ("write", "b")
    assert sorted(events) == [("forward", "a"), ("forward", "b"), ("write", "a"), ("write", "b")]
