"""The config of `asit sft`: supervised fine-tuning of a checkpoint into an organism (rayjobs.organisms.sft)."""

from __future__ import annotations

from pydantic import Field, field_validator

from rayjobs.config.pipeline import JobBase, ModelRef, Strict, TaskConfig

PROMPT_SLOT = "{prompt}"


class SFTParams(Strict):
    """How `asit sft` fine-tunes: the paper's optimiser settings, the instruction template, workers, the card."""

    # The paper's optimiser settings are the defaults; tiny from-scratch organisms need a far larger lr.
    lr: float = Field(2e-5, gt=0.0, le=1.0, description="AdamW learning rate (the paper: 2e-5)")
    weight_decay: float = Field(0.05, ge=0.0, le=1.0, description="AdamW weight decay (the paper: 0.05)")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training split")
    global_batch_size: int = Field(16, ge=1, le=65536, description="examples per step, split over the workers")
    max_len: int = Field(256, ge=8, le=65536, description="tokens per training text (longer are cut)")
    grad_clip: float = Field(1.0, gt=0.0, description="max global gradient norm")
    template: str = Field(PROMPT_SLOT, description="instruction template around each prompt, with one {prompt}; "
                                                    "e.g. '### Instruction:\\n{prompt}\\n### Response:\\n'")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train data-parallel workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); False trains on CPU (gloo)")
    eval_prompts: int = Field(50, ge=1, le=100_000, description="held-out prompts per tag for the organism card")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per card answer")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count(PROMPT_SLOT) != 1:
            raise ValueError(f"must contain {PROMPT_SLOT} exactly once")
        return value


class SFTConfig(JobBase):
    """`asit sft`: fine-tune a checkpoint on the task's data with Ray Train, then measure its organism card."""

    base: ModelRef = Field(description="the checkpoint to fine-tune: a save_pretrained directory or hub id")
    name: str = Field("sft", description="tag of the fine-tuned model; linked at <run_dir>/models/<name>")
    task: TaskConfig = Field(TaskConfig(), description="the task whose examples the model is fine-tuned on")
    sft: SFTParams = Field(SFTParams(), description="optimiser, template, workers and the card")
