"""The one judge factory: a judge from the judge block of a stage's config, whichever stage asks.

Similarity judges score how close a completion is to a reference, in [0, 1] (validate:
rayjobs.mapper_validation.judges); refusal judges say whether a completion refuses (the refusal experiment:
rayjobs.refusal.judges). The block's `kind` names the judge; each builder reads the fields its judge needs.
"""

from __future__ import annotations

from typing import Any, Callable

from rayjobs.errors import UserError


def _text(cfg: Any) -> Any:
    from rayjobs.mapper_validation.judges import TextJudge

    return TextJudge(cfg.text_similarity)


def _hf(cfg: Any) -> Any:
    from rayjobs.mapper_validation.judges import HFJudge

    return HFJudge(cfg.model_path or "", cfg.device)


def _http(cfg: Any) -> Any:
    from rayjobs.mapper_validation.judges import HTTPJudge

    return HTTPJudge(cfg.url or "", cfg.model or "", cfg.api_key_env, cfg.timeout_s)


def _substring(cfg: Any) -> Any:
    from rayjobs.refusal.judges import SubstringJudge

    return SubstringJudge()


def _classifier(cfg: Any) -> Any:
    """A local sequence-classification checkpoint, loaded with trust_remote_code off."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rayjobs.refusal.judges import HFClassifierJudge

    if not cfg.path:
        raise UserError("judge.path is required for judge.kind=hf_classifier; give a sequence-classification checkpoint")
    model = AutoModelForSequenceClassification.from_pretrained(cfg.path, trust_remote_code=False)
    return HFClassifierJudge(model, AutoTokenizer.from_pretrained(cfg.path), cfg.refusal_label)


JUDGES: dict[str, Callable[[Any], Any]] = {"text": _text, "hf": _hf, "http": _http, "substring": _substring,
                                          "hf_classifier": _classifier}


def make_judge(cfg: Any) -> Any:
    """The judge `cfg.kind` names, built from `cfg` (validate's JudgeConfig or the refusal experiment's JudgeParams)."""
    if cfg.kind not in JUDGES:
        raise UserError(f"judge.kind={cfg.kind!r} is not a judge; use one of {', '.join(JUDGES)}")
    return JUDGES[cfg.kind](cfg)
