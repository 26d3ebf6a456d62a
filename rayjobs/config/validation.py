"""Config of `asit validate`: mapper validation by replacement generation, and its out-of-distribution cost."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rayjobs.config.pipeline import JobBase, Layer, ModelRef, Strict, TaskConfig


class JudgeConfig(Strict):
    """The validation judge (rayjobs.scoring.judges): how similar and how coherent completions are, in [0, 1]."""

    backend: Literal["text", "hf", "http"] = Field(
        "text", description="text: `text_similarity` + distinct character 4-grams (offline, deterministic); hf: a "
                            "local causal LM (embedding cosine, token likelihood); http: an OpenAI-compatible "
                            "endpoint's 0-5 grade")
    text_similarity: Literal["chrf", "rouge_l"] = Field(
        "chrf", description="text: chrf = chrF++ (character and word n-grams: grades near-miss one-word answers); "
                            "rouge_l = word-level ROUGE-L F1 (any wrong word scores 0, so short answers often tie)")
    model_path: str | None = Field(None, description="hf: local save_pretrained directory of the judge model")
    device: Literal["cpu", "cuda"] = Field("cpu", description="hf: where the judge model runs")
    url: str | None = Field(None, description="http: base URL of the API, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="http: model name sent with each request")
    api_key_env: str = Field("ASIT_JUDGE_API_KEY", description="http: environment variable holding the API key")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="http: seconds to wait for each answer")

    @property
    def kind(self) -> str:
        """The judge (rayjobs.scoring.judges.make_judge): the backend."""
        return self.backend

    @model_validator(mode="after")
    def _backend_needs(self) -> "JudgeConfig":
        needs = {"hf": ("model_path",), "http": ("url", "model")}.get(self.backend, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"backend {self.backend!r} needs {' and '.join(missing)}; set judge.{missing[0]}=...")
        return self


class ValidateConfig(JobBase):
    """`asit validate`: the target generating with mapped source activations, scored against its own completions."""

    source: ModelRef = Field(description="the source model A (its activations are mapped)")
    target: ModelRef = Field(description="the target model B (generates with its layer output replaced)")
    mappers: dict[str, str] = Field(min_length=1, description="label -> mapper directory (source layer -> target layer)")
    source_layer: Layer | None = Field(None, description="source decoder block; None = the chosen one in `summary`")
    target_layer: Layer | None = Field(None, description="target decoder block; None = the chosen one in `summary`")
    summary: str | None = Field(None, description="summary.json of `asit run`, read for layers left as None")
    task: TaskConfig = Field(TaskConfig(), description="the task whose held-out prompts are generated from")
    n_prompts: int = Field(50, ge=1, le=100_000, description="held-out prompts per set (|prod|, |dev|, trigger-free)")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per completion")
    batch_size: int = Field(32, ge=1, le=4096, description="prompts per forward")
    judge: JudgeConfig = Field(JudgeConfig(), description="the similarity and coherence judge")
    n_samples: int = Field(5, ge=0, le=1000, description="completions per condition kept in the result for reading")

