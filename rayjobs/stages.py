"""Every stage, declared once: the CLI builds its verbs from this table, the runner (rayjobs.jobs.runner) runs
its rows, the pipeline chains them and the report finds their outputs by them.

A row names the stage's config class and job module (as strings: reading the table imports neither, so
`asit --help` stays free of Ray and torch), where its outputs go (`<run_dir>/<folder>/<dir>-<hash>`), which
config fields are hashed into that name, which fields are input paths (hashed by what they point at, see
rayjobs.identity), the check that runs before Ray starts, and the stable links it publishes. Adding a stage
is a row here plus a compute function `compute(cfg, out, **kwargs) -> dict` in a job module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

from rayjobs.identity import config_hash, identity, map_inputs, resolved

DONE = "_done.json"  # a stage directory's commit record
# Where or how a stage runs, not what it computes: never hashed.
NOT_HASHED = frozenset({"tracking", "ray", "run_dir", "num_threads"})
Links = Callable[[Any, Mapping[str, Any]], dict[str, str]]


def load(ref: str) -> Any:
    """The object a 'module:attribute' reference names."""
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage (see the module docstring); `kind` pipeline: a chain of stages under one parent MLflow run,
    no outputs of its own; service: a long-running verb with no outputs (switch serve)."""

    name: str
    config: str  # 'module:Class' of its config
    job: str  # 'module:function' computing it: compute(cfg, out, **kwargs) -> result (pipeline, service: no out)
    help: str = ""
    verb: tuple[str, ...] | None = None  # CLI words; None: runs only inside another stage
    example: str | None = None  # the config file that runs it (report: how to produce a missing result)
    folder: str | None = None
    dir_name: str = "{name}"  # formatted with the config's fields
    run_name: str = "{stage}"  # MLflow run name, formatted with the config's fields, `stage` and `run` (run_dir's name)
    hashed: frozenset[str] | None = None  # None: every field but NOT_HASHED and `not_hashed`
    not_hashed: frozenset[str] = frozenset()
    inputs: tuple[str, ...] = ()  # dotted config paths ('*' = any key) of input files and directories
    check: str | None = None  # 'module:function' run on the config before Ray starts
    before: str | None = None  # 'module:function(cfg, out, **kwargs)': a check that needs the directory or flags
    prepare: str | None = None  # 'module:function' filling config fields from other files before hashing
    links: Links | None = None  # stable link (relative to run_dir) -> output, from the config and result
    kind: Literal["stage", "pipeline", "service"] = "stage"
    fresh: bool = True  # the runner empties the directory of a stage that did not finish; False: it resumes itself
    resumable: bool = False  # the verb takes --resume
    repairable: bool = False  # the verb takes --repair
    printer: str | None = None  # 'module:function' rendering the result in the terminal; JSON otherwise

    def hashed_fields(self, cfg: Any) -> dict[str, Any]:
        """What the stage's identity is made of: its hashed fields, input paths replaced by their identities."""
        fields = set(type(cfg).model_fields) if self.hashed is None else set(self.hashed)
        data = cfg.model_dump(mode="json", include=fields - NOT_HASHED - self.not_hashed)
        return map_inputs(data, self.inputs, identity)

    def hash(self, cfg: Any) -> str:
        return config_hash(self.hashed_fields(cfg))

    def directory(self, cfg: Any) -> Path:
        """`<run_dir>/<folder>/<dir>-<hash>`: one directory per distinct input."""
        assert self.folder is not None, f"stage {self.name} has no outputs"
        name = self.dir_name.format(**dict(cfg))
        return Path(cfg.run_dir) / self.folder / f"{name}-{self.hash(cfg)}"

    def pinned(self, cfg: Any) -> Any:
        """The config as the stage runs it: fields filled by `prepare`, input links replaced by their targets."""
        if self.prepare is not None:
            cfg = load(self.prepare)(cfg)
        data = map_inputs(cfg.model_dump(mode="json"), self.inputs, resolved)
        return type(cfg).model_validate(data)

    def done_glob(self, **fields: str) -> str:
        """Glob of this stage's commit records under a run dir (fields not given match anything)."""
        assert self.folder is not None
        name = self.dir_name.format_map(_Anything(fields))
        return f"{self.folder}/{name}-*/{DONE}"


class _Anything(dict):
    def __missing__(self, key: str) -> str:
        return "*"


# --- what each stage publishes: stable link under run_dir -> output -------------------------------------


def _pair_links(*names: str) -> Links:
    """models/<name> for each organism of a pair (the result holds {name: {"path": ..., "card": ...}})."""
    return lambda cfg, done: {f"models/{n}": done[n]["path"] for n in names}


def _activation_links(cfg: Any, done: Mapping[str, Any]) -> dict[str, str]:
    return {f"activations/{cfg.name}/{site}": layer["dir"] for site, layer in done["layers"].items()}


def _mapper_links(cfg: Any, done: Mapping[str, Any]) -> dict[str, str]:
    return {f"mappers/{kind}": path for kind, path in done["mappers"].items()}


def _switch_links(cfg: Any, done: Mapping[str, Any]) -> dict[str, str]:
    return {f"switches/{kind}/{site}": path for kind, by_site in done["switches"].items() for site, path in by_site.items()}


# --- the table -----------------------------------------------------------------------------------------

_CONFIG, _PREFLIGHT = "rayjobs.config", "rayjobs.preflight"
_ROWS = (
    Stage("run", f"{_CONFIG}:PipelineConfig", "rayjobs.jobs.pipeline:chain",
          "Run the whole pipeline: organisms, layers, extract, fit, transfer.", verb=("run",),
          example="configs/demo.yaml", run_name="{run} seed={seed}", kind="pipeline", check=f"{_PREFLIGHT}:pipeline",
          inputs=("task.path", "models.*.path"), printer="cli.tables:print_pipeline_summary"),
    Stage("organisms", f"{_CONFIG}:OrganismsConfig", "rayjobs.jobs.organisms:compute",
          "Train the backdoored model organisms (source and target models).", verb=("organisms",),
          example="configs/organisms.yaml", folder="organisms", dir_name="pair", inputs=("task.path",),
          check=f"{_PREFLIGHT}:organisms", links=_pair_links("source", "target")),
    Stage("extract", f"{_CONFIG}:ExtractConfig", "rayjobs.jobs.extract:compute",
          "Extract residual-stream activations of both models to Parquet.", verb=("extract",),
          example="configs/extract.yaml", folder="extract", run_name="extract-{name}",
          # How many times to retry is not what is computed: changing it must not move the outputs.
          not_hashed=frozenset({"max_retries"}), inputs=("model.path", "task.path"), check=f"{_PREFLIGHT}:extract",
          links=_activation_links, fresh=False, repairable=True),
    Stage("fit", f"{_CONFIG}:FitConfig", "rayjobs.jobs.fit:compute", "Fit a mapper from source to target activations.",
          verb=("fit",), example="configs/fit.yaml", folder="fit", dir_name="mappers",
          # Registering is what happens to the result, not what is computed.
          not_hashed=frozenset({"registry"}),
          inputs=("source_acts", "target_acts"), check=f"{_PREFLIGHT}:fit", links=_mapper_links,
          printer="cli.tables:print_fit"),
    Stage("layers", f"{_CONFIG}:LayersConfig", "rayjobs.jobs.layers:compute",
          "Sweep layers for steerability and choose the (source, target) layer pair.", verb=("layers",),
          example="configs/layers.yaml", folder="layers", run_name="layers-{name}", inputs=("model.path", "task.path"),
          check=f"{_PREFLIGHT}:layers_stage"),
    Stage("transfer", f"{_CONFIG}:TransferConfig", "rayjobs.jobs.transfer:compute",
          "Steer the target with mapped source vectors and measure the backdoor rate.", verb=("transfer",),
          example="configs/transfer.yaml", folder="transfer", dir_name="transfer",
          inputs=("source.path", "target.path", "mappers.*", "layer_mappers.*.mappers.*", "task.path"),
          check=f"{_PREFLIGHT}:transfer"),
    Stage("sft", "rayjobs.config:SFTConfig", "rayjobs.jobs.sft:compute",
          "Fine-tune a local or hub checkpoint on a task's data with Ray Train; writes its organism card.",
          verb=("sft",), example="configs/sft.yaml", folder="sft", run_name="sft-{name}",
          inputs=("base.path", "task.path"), check=f"{_PREFLIGHT}:sft",
          links=lambda cfg, done: {f"models/{cfg.name}": done["path"]}),
    Stage("sweep", f"{_CONFIG}:SweepConfig", "rayjobs.jobs.sweep:compute",
          "Ray Tune sweep over mapper hyperparameters and layer pairs on cached activations.", verb=("sweep",),
          example="configs/sweep.yaml", folder="sweep", dir_name="mappers",
          inputs=("source_acts", "target_acts", "transfer.source.path", "transfer.target.path", "task.path"),
          check=f"{_PREFLIGHT}:sweep", before="rayjobs.jobs.sweep:resumable",
          links=lambda cfg, done: {"mappers/sweep-best": done["best"]["dir"]}, fresh=False, resumable=True),
    Stage("validate", "rayjobs.config:ValidateConfig", "rayjobs.jobs.validate:compute",
          "Validate mappers: the target generating with mapped source activations (similarity, KL, MvA/TvS, OOD cost).",
          verb=("validate",), example="configs/validate.yaml", folder="validate", dir_name="validate",
          # The layers left unset come from `summary`; what is hashed is the layers it gave, not its path.
          not_hashed=frozenset({"summary"}), prepare=f"{_PREFLIGHT}:with_layers",
          inputs=("source.path", "target.path", "mappers.*", "task.path", "judge.model_path"),
          check=f"{_PREFLIGHT}:validate"),
    Stage("refusal", "rayjobs.config:RefusalConfig", "rayjobs.jobs.refusal:chain",
          "Refusal: organisms, difference-of-means refusal directions, ablation/addition, mapped vs native.",
          verb=("refusal",), example="configs/refusal.yaml", kind="pipeline", run_name="{run} seed={seed}",
          inputs=("data.path", "models.*.path", "judge.path"), check=f"{_PREFLIGHT}:refusal",
          printer="cli.tables:print_refusal"),
    Stage("refusal-organisms", "rayjobs.config:RefusalConfig", "rayjobs.jobs.refusal:train_organisms",
          "The refusal organism pair.", folder="refusal", dir_name="organisms",
          hashed=frozenset({"data", "organisms", "seed"}), inputs=("data.path",), check=f"{_PREFLIGHT}:refusal_data",
          links=_pair_links("source", "target")),
    Stage("refusal-experiment", "rayjobs.config:RefusalConfig", "rayjobs.jobs.refusal:experiment",
          "Refusal directions, mapper, ablation and addition per method.", folder="refusal", dir_name="experiment",
          # models: the pair given, or the refusal-organisms output (pinned by what it is).
          hashed=frozenset({"data", "models", "direction", "eval", "judge", "mapper", "seed"}),
          inputs=("data.path", "models.*.path", "judge.path"), check=f"{_PREFLIGHT}:refusal"),
    Stage("switch-organisms", "rayjobs.config:SwitchConfig", "rayjobs.jobs.switch_fit:train_organisms",
          "The switch's base and fine-tuned organisms.", folder="switch", dir_name="organisms",
          hashed=frozenset({"task", "organism", "vocab_size", "seed"}), inputs=("task.path",),
          check=f"{_PREFLIGHT}:switch", links=_pair_links("base", "finetuned")),
    Stage("switch-fit", "rayjobs.config:SwitchConfig", "rayjobs.jobs.switch_fit:compute",
          "Train base + fine-tuned organisms (unless given), extract both, fit one switch per layer.",
          verb=("switch", "fit"), example="configs/switch.yaml", folder="switch", dir_name="fit",
          hashed=frozenset({"task", "organism", "vocab_size", "seed", "models", "layers", "texts", "extract", "fit"}),
          inputs=("task.path", "models.*.path"), check=f"{_PREFLIGHT}:switch", links=_switch_links),
    Stage("switch-scan", "rayjobs.config:SwitchConfig", "rayjobs.jobs.switch_scan:compute",
          "Per layer: trigger rate with the switch on/off, patching and weight-swap baselines; plot, register.",
          verb=("switch", "scan"), example="configs/switch.yaml", folder="switch", dir_name="scan",
          hashed=frozenset({"task", "organism", "vocab_size", "seed", "models", "layers", "texts", "extract", "fit",
                            "scan"}),
          inputs=("task.path", "models.*.path"), check=f"{_PREFLIGHT}:switch", printer="cli.switch:print_scan"),
    Stage("switch-serve", "rayjobs.config:SwitchConfig", "rayjobs.jobs.switch_serve:compute",
          "Serve the fine-tuned model with its switch (Ray Serve, 127.0.0.1); each request says on or off.",
          verb=("switch", "serve"), example="configs/switch.yaml", kind="service",
          inputs=("task.path", "models.*.path"), check=f"{_PREFLIGHT}:switch_serve"),
)
STAGES: dict[str, Stage] = {s.name: s for s in _ROWS}


def command(stage: Stage) -> str:
    """How a user runs a verb's row: `asit <verb...> <example config>`."""
    assert stage.verb is not None, f"stage {stage.name} is not a verb"
    return " ".join(("asit", *stage.verb, stage.example or "CONFIG"))


def verbs(group: tuple[str, ...] = ()) -> dict[str, Stage]:
    """The CLI verbs under `group` (() for the top level, ('switch',) for `asit switch ...`), in table order."""
    n = len(group) + 1
    return {s.verb[-1]: s for s in _ROWS if s.verb is not None and len(s.verb) == n and s.verb[:-1] == group}
