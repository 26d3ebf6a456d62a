"""The similarity and coherence judge of mapper validation: one interface, three backends.

Every judge scores in [0, 1] (an LLM's 0-5 grade is divided by 5), so win rates and plots do not care
which one ran:
- `TextJudge` (default, offline, deterministic): similarity = chrF++ (default) or word-level ROUGE-L F1.
  The demo's |dev| answers are one or two words, where ROUGE-L is all or nothing: a near miss ("bll" for
  "buy") and a loop ("yyyyyyyyyyyy") both score 0 and the pair ties. chrF++ grades by character n-grams,
  and its clipped counts give a loop like "444444444444" against "46" no more matches than "4" gets (a plain
  character ratio would). Coherence = the share of distinct character 4-grams (loops score low; empty text 0).
- `HFJudge`: a local causal LM; similarity = cosine of mean-pooled last hidden states (clipped at 0),
  coherence = the geometric-mean probability of the text's tokens, exp(-mean NLL).
- `HTTPJudge`: an OpenAI-compatible chat-completions endpoint asked for a 0-5 grade; its key is read
  from the environment variable the config names, never from the config itself.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Literal, Protocol

import torch

from rayjobs.errors import UserError
from rayjobs.mapper_validation.metrics import chrf, rouge_l


class Judge(Protocol):
    name: str

    def similarity(self, references: Sequence[str], outputs: Sequence[str]) -> list[float]:
        """Per pair, how close the output is to the reference, in [0, 1]."""

    def coherence(self, texts: Sequence[str]) -> list[float]:
        """Per text, how coherent it is, in [0, 1]."""


class TextJudge:
    def __init__(self, metric: Literal["chrf", "rouge_l"] = "chrf") -> None:
        self.metric = {"chrf": chrf, "rouge_l": rouge_l}[metric]
        self.name = f"text:{metric}"

    def similarity(self, references: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return self.metric(references, outputs)

    def coherence(self, texts: Sequence[str]) -> list[float]:
        return [_distinct_ngrams(" ".join(t.split())) for t in texts]


def _distinct_ngrams(text: str, n: int = 4) -> float:
    """Share of distinct character n-grams: loops score low whether they repeat words ("I I I I") or
    characters within one word ("222222222222", which a word-level count would call perfect)."""
    if len(text) <= n:
        return float(bool(text))
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / len(grams)


class HFJudge:
    name = "hf"

    def __init__(self, path: str, device: str = "cpu") -> None:
        from rayjobs.models import load_model, load_tokenizer

        self.model = load_model(path, device=device)
        self.tok = load_tokenizer(path)

    @torch.no_grad()
    def _forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last hidden states (batch, pos, d), logits (batch, pos, vocab), ids and mask (batch, pos), on the CPU."""
        enc = self.tok(list(texts), return_tensors="pt", padding=True)
        dev = next(self.model.parameters()).device
        out = self.model(**{k: v.to(dev) for k, v in enc.items()}, output_hidden_states=True)
        return out.hidden_states[-1].float().cpu(), out.logits.float().cpu(), enc["input_ids"], enc["attention_mask"]

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        hidden, _, _, mask = self._forward(texts)
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)

    def similarity(self, references: Sequence[str], outputs: Sequence[str]) -> list[float]:
        cos = torch.nn.functional.cosine_similarity(self._embed(references), self._embed(outputs), dim=-1)
        return [max(0.0, float(c)) for c in cos]

    def coherence(self, texts: Sequence[str]) -> list[float]:
        _, logits, ids, mask = self._forward(texts)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        scored = mask[:, 1:].float() * mask[:, :-1].float()  # targets that are real tokens after a real token
        empty = [not t.strip() for t in texts]
        mean_nll = (nll * scored).sum(1) / scored.sum(1).clamp_min(1)
        return [0.0 if e else float(torch.exp(-n)) for e, n in zip(empty, mean_nll)]


_SIMILARITY_PROMPT = ("Rate how similar the RESPONSE is to the REFERENCE in meaning and wording, from 0 (unrelated) "
                      "to 5 (identical). Answer with the number only.\nREFERENCE: {ref}\nRESPONSE: {out}")
_COHERENCE_PROMPT = ("Rate how coherent and fluent this text is, from 0 (gibberish) to 5 (perfectly coherent). "
                     "Answer with the number only.\nTEXT: {text}")


class HTTPJudge:
    name = "http"

    def __init__(self, url: str, model: str, api_key_env: str, timeout_s: float) -> None:
        key = os.environ.get(api_key_env)
        if not key:
            raise UserError(f"judge.api_key_env: the environment variable {api_key_env} is not set; "
                            f"export {api_key_env}=<the endpoint's API key> or name another variable")
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model, self.key, self.timeout_s = model, key, timeout_s

    def similarity(self, references: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return [self._grade(_SIMILARITY_PROMPT.format(ref=r, out=o)) for r, o in zip(references, outputs, strict=True)]

    def coherence(self, texts: Sequence[str]) -> list[float]:
        return [self._grade(_COHERENCE_PROMPT.format(text=t)) for t in texts]

    def _grade(self, prompt: str) -> float:
        """The endpoint's 0-5 grade of one prompt, divided by 5."""
        reply = self._post({"model": self.model, "temperature": 0, "max_tokens": 8,
                            "messages": [{"role": "user", "content": prompt}]})
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"judge.url: {self.endpoint} answered without choices[0].message.content; "
                            "point judge.url at an OpenAI-compatible /v1 base URL") from None
        match = re.search(r"\d+(?:\.\d+)?", content or "")
        if match is None:
            raise UserError(f"judge.model: {self.model} answered {content!r}, not a 0-5 grade; use a model that "
                            "follows the grading instruction")
        return min(max(float(match.group()) / 5.0, 0.0), 1.0)

    def _post(self, body: dict) -> dict:
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise UserError(f"judge.url: {self.endpoint} answered HTTP {exc.code} ({exc.reason}); check the URL, "
                            "judge.model and the key in judge.api_key_env") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise UserError(f"judge.url: {self.endpoint} cannot be used ({exc}); start the endpoint or fix "
                            "judge.url") from None
