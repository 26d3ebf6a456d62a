"""Every job's config, in one package: one pydantic model per job, loaded from YAML plus dotted overrides.

    pipeline.py  the building blocks (ModelRef, TaskConfig, JobBase, the mapper / steering / extraction
                 groups) and the pipeline's stages: organisms, layers, extract, fit, transfer, run
    organism.py  OrganismSpec: one tiny organism and its training recipe
    sweep.py validation.py refusal.py switch.py sft.py   the other jobs
    loading.py   load_config(path, overrides, Model): every problem at once, one line each

Nothing here imports the library it configures (the organism spec lives here, so reading a config never
pulls in torch or transformers). `asit config VERB` prints a job's fields with their descriptions.
"""

from rayjobs.config.loading import ConfigError, apply_overrides, load_config, read_yaml, validate
from rayjobs.config.organism import OrganismSpec, source_spec, target_spec, tiny_spec
from rayjobs.config.pipeline import (
    Alpha, Dtype, ExtractConfig, ExtractParams, FitConfig, FitParams, JobBase, Layer, LayerMappers, LayersConfig,
    LayersParams, MapperKind, MapperParams, ModelPair, ModelRef, OrganismsConfig, OrganismsParams, PipelineConfig,
    RayConfig, SteerParams, Strict, TaskConfig, TrackingConfig, TransferConfig, TransferParams,
)
from rayjobs.config.refusal import (
    DirectionParams, JudgeParams, RefusalConfig, RefusalData, RefusalEval, RefusalMapperParams, RefusalOrganisms,
)
from rayjobs.config.sft import SFTConfig, SFTParams
from rayjobs.config.sweep import LayerPair, LogRange, SweepConfig, SweepParams, SweepSpace, SweepTransfer
from rayjobs.config.switch import ServeParams, SwitchConfig, SwitchFitParams, SwitchModels, SwitchScanParams
from rayjobs.config.validation import JudgeConfig, ValidateConfig

__all__ = [
    "Alpha", "ConfigError", "DirectionParams", "Dtype", "ExtractConfig", "ExtractParams", "FitConfig", "FitParams",
    "JobBase", "JudgeConfig", "JudgeParams", "Layer", "LayerMappers", "LayerPair", "LayersConfig", "LayersParams",
    "LogRange", "MapperKind", "MapperParams", "ModelPair", "ModelRef", "OrganismSpec", "OrganismsConfig",
    "OrganismsParams", "PipelineConfig", "RayConfig", "RefusalConfig", "RefusalData", "RefusalEval",
    "RefusalMapperParams", "RefusalOrganisms", "SFTConfig", "SFTParams", "ServeParams", "SteerParams", "Strict",
    "SweepConfig", "SweepParams", "SweepSpace", "SweepTransfer", "SwitchConfig", "SwitchFitParams", "SwitchModels",
    "SwitchScanParams", "TaskConfig", "TrackingConfig", "TransferConfig", "TransferParams", "ValidateConfig",
    "apply_overrides", "load_config", "read_yaml", "source_spec", "target_spec", "tiny_spec", "validate",
]
