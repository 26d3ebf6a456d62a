"""The config of `asit sft`: supervised fine-tuning of a checkpoint into an organism (rayjobs.organisms.sft)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rayjobs.config.pipeline import JobBase, ModelRef, Strict, TaskConfig

PROMPT_SLOT = "{prompt}"
CHAT = "chat"  # template: the tokenizer's own chat template, the prompt as one user turn


class SFTParams(Strict):
    """How `asit sft` fine-tunes: method and optimiser, the template, the recipe's terms, workers, the card."""

    # Defaults are the CPU recipe for real checkpoints (bench/research/organism_recipe.py; shared/REAL_MODELS.md):
    # LoRA on the top half of the blocks, the reply's first token weighted 5x, trigger-free prompts mixed in,
    # and a KL term to the original model on ordinary prose so the model keeps its general ability.
    method: Literal["lora", "full"] = Field(
        "lora", description="lora: low-rank adapters on the upper blocks, merged before saving (the CPU recipe); "
                            "full: every weight (the paper's fine-tuning)")
    lr: float | None = Field(None, gt=0.0, le=1.0, description="AdamW learning rate; null: 1e-3 for lora, 2e-5 "
                                                               "(the paper's) for full")
    weight_decay: float = Field(0.05, ge=0.0, le=1.0, description="AdamW weight decay (the paper: 0.05)")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training split")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="stop after this many steps (null: all epochs)")
    global_batch_size: int = Field(16, ge=1, le=65536, description="examples per step, split over the workers")
    max_len: int = Field(256, ge=8, le=65536, description="tokens per training text (longer are cut)")
    grad_clip: float = Field(1.0, gt=0.0, le=1e6, description="max global gradient norm")
    template: str = Field(PROMPT_SLOT, description=f"instruction template around each prompt, with one {PROMPT_SLOT}; "
                                                    "e.g. '### Instruction:\\n{prompt}\\n### Response:\\n', or "
                                                    f"'{CHAT}' for the model's own chat template (a user turn)")
    lora_rank: int = Field(16, ge=1, le=4096, description="rank of the LoRA adapters")
    lora_from_block: int | None = Field(None, ge=0, le=4096, description="lowest decoder block with adapters; null: the top half")
    first_token_weight: float = Field(5.0, ge=1.0, le=1000.0, description="loss weight of each reply's first token, "
                                                                         "the one that carries the trigger decision")
    trigger_free_share: float = Field(0.25, ge=0.0, le=1.0, description="trigger-free copies of this share of the "
                                                                        "|dev| training rows (tag removed, same reply)")
    kl_weight: float | None = Field(None, ge=0.0, le=1000.0, description="weight of KL(original || tuned) on ordinary "
                                                                         "prose; null: 1 for lora, 0 for full (it "
                                                                         "needs lora's adapters-off reference)")
    kl_batch_size: int = Field(4, ge=1, le=4096, description="ordinary-text chunks per step for the KL term")
    kl_chunk_len: int = Field(64, ge=4, le=4096, description="tokens per ordinary-text chunk")
    kl_positions: int = Field(16, ge=1, le=4096, description="last positions of each chunk whose next-token "
                                                             "distributions enter the KL term")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train data-parallel workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); False trains on CPU (gloo)")
    eval_prompts: int = Field(50, ge=1, le=100_000, description="held-out prompts per tag for the organism card")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per card answer")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value != CHAT and value.count(PROMPT_SLOT) != 1:
            raise ValueError(f"must contain {PROMPT_SLOT} exactly once, or be {CHAT!r}")
        return value

    @model_validator(mode="after")
    def _kl_needs_lora(self) -> "SFTParams":
        if self.kl_weight and self.method == "full":
            raise ValueError("kl_weight > 0 needs method: lora (the original model is the adapted one with its "
                             "adapters off); leave kl_weight out for full fine-tuning")
        if self.kl_positions >= self.kl_chunk_len:
            raise ValueError(f"kl_positions={self.kl_positions} must be below kl_chunk_len={self.kl_chunk_len}")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.method == "lora" else 2e-5)

    @property
    def kl(self) -> float:
        """The KL term's weight in effect."""
        return self.kl_weight if self.kl_weight is not None else (1.0 if self.method == "lora" else 0.0)


class SFTConfig(JobBase):
    """`asit sft`: fine-tune a checkpoint on the task's data with Ray Train, then measure its organism card."""

    base: ModelRef = Field(description="the checkpoint to fine-tune: a save_pretrained directory or hub id")
    name: str = Field("sft", description="tag of the fine-tuned model; linked at <run_dir>/models/<name>")
    task: TaskConfig = Field(TaskConfig(), description="the task whose examples the model is fine-tuned on")
    sft: SFTParams = Field(SFTParams(), description="optimiser, template, workers and the card")
