"""switch serve: a Ray Serve application hosting the fine-tuned model with its switch.

POST / with {"prompts": [...], "switch": true|false, "max_new_tokens": n}; concurrent requests are
batched (@serve.batch) and each answer says which mode produced it. GET / describes the server,
GET /openapi.json is its OpenAPI description and GET /docs a page for people; other paths are 404.
Binds 127.0.0.1 unless `serve.host` says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from rayjobs import console
from rayjobs.config import ModelRef, SwitchConfig
from rayjobs.errors import UserError
from rayjobs.jobs import runner, switch_fit

APP_NAME = "asit-switch"


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
class SwitchServer:
    def __init__(self, ref: dict[str, Any], site: str, mapper_dir: str, limits: dict[str, int], num_threads: int,
                 batch_size: int, batch_wait_s: float) -> None:
        import torch

        from rayjobs.models import load_model, load_tokenizer
        from rayjobs.models.prompt_template import model_template
        from rayjobs.switch.serving import Limits, SwitchedModel

        torch.set_num_threads(num_threads)
        model_ref = ModelRef(**ref)
        model = load_model(model_ref.path, revision=model_ref.revision, dtype=model_ref.dtype, device=model_ref.device,
                           trust_remote_code=model_ref.trust_remote_code)
        self.tok = load_tokenizer(model_ref.path, revision=model_ref.revision, trust_remote_code=model_ref.trust_remote_code)
        template = model_template(model_ref, self.tok)  # its sft card's format: a real organism answers only in it
        self.switched = SwitchedModel(model, self.tok, site, mapper_dir, template)
        self.limits = Limits(**limits)
        self.info = {"model": model_ref.path, "site": site, "mapper": mapper_dir, "limits": limits, "template": template}
        self._batch.set_max_batch_size(batch_size)
        self._batch.set_batch_wait_timeout_s(batch_wait_s)

    async def __call__(self, request: Request) -> JSONResponse:
        from rayjobs.switch.serving import RequestError, docs_page, openapi, parse_request

        path = request.url.path.rstrip("/") or "/"
        if request.method == "GET":
            pages = {"/": lambda: JSONResponse(self.info), "/openapi.json": lambda: JSONResponse(openapi(self.limits)),
                     "/docs": lambda: HTMLResponse(docs_page(openapi(self.limits)))}
            if path not in pages:
                return JSONResponse({"error": f"no page {path}; GET / (info), /docs or /openapi.json, POST / (ask)"},
                                    status_code=404)
            return pages[path]()
        if path != "/":
            return JSONResponse({"error": f"POST to /, not {path}"}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"error": f"method {request.method} not allowed; POST a JSON request"}, status_code=405)
        try:
            req = parse_request(await request.body(), self.limits, self.tok)
        except RequestError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return JSONResponse(await self._batch(req))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def _batch(self, requests: list) -> list[dict]:
        # In a worker thread, so the event loop keeps accepting (and validating) the next batch meanwhile.
        return await asyncio.to_thread(self.switched.answer, requests)


def app(cfg: SwitchConfig, site: str, mapper_dir: str, ref: ModelRef) -> serve.Application:
    limits = cfg.serve.model_dump(include={"max_prompt_tokens", "max_new_tokens", "max_prompts"})
    # Serve lets a replica take 5 requests at once by default, so a larger batch could never fill; twice the batch
    # lets the next one gather while the last generates.
    return SwitchServer.options(max_ongoing_requests=2 * cfg.serve.batch_size).bind(
        ref.model_dump(mode="json"), site, mapper_dir, limits, cfg.num_threads, cfg.serve.batch_size, cfg.serve.batch_wait_s)


def chosen_switch(cfg: SwitchConfig) -> tuple[str, str, ModelRef]:
    """(site, mapper dir, fine-tuned model): serve.layer, else the best layer of the scan (run if needed)."""
    fitted = runner.run("switch-fit", cfg)
    if cfg.serve.layer is None:
        layer = runner.run("switch-scan", cfg)["best_layer"]
    else:
        layer = cfg.serve.layer
    site, kind = f"layers.{layer}.resid_post", cfg.fit.kinds[0]
    if site not in fitted["switches"][kind]:
        raise UserError(f"serve.layer: {layer} has no fitted switch; fitted layers: {fitted['layers']}; "
                        "pick one of them or add it to `layers`")
    ref = cfg.models.finetuned if cfg.models else switch_fit.organisms_refs(fitted).finetuned
    return site, fitted["switches"][kind][site], ref


def compute(cfg: SwitchConfig) -> dict[str, Any]:
    """Serve the chosen switch until Ctrl-C or SIGTERM (serve.blocking), or return once the app is up."""
    site, mapper_dir, ref = chosen_switch(cfg)
    # Serve logs an INFO line per request from its proxy and replicas: only with --verbose (files keep WARNING+).
    logs = {"log_level": "INFO" if console.verbose() else "WARNING"}
    if not console.verbose():  # the driver's Serve lines too (one said the http options given were "not applied")
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port}, logging_config=logs)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}/"
    result = {"url": url, "site": site, "mapper": mapper_dir, "model": ref.path}
    try:
        serve.run(app(cfg, site, mapper_dir, ref), name=APP_NAME, route_prefix="/", logging_config=logs)
        print(f"switch server ready: {url} (site {site}); ask with `asit switch ask PROMPT --url {url} --on`; "
              "Ctrl-C stops it", flush=True)
        while cfg.serve.blocking:  # as serve.run(blocking=True) waits, with the line above once the model is up
            time.sleep(10)
    except (KeyboardInterrupt, runner.Terminated):
        # Ctrl-C or SIGTERM stops what this command started, also on a shared cluster
        serve.delete(APP_NAME)
        return {**result, "stopped": True}
    return result
