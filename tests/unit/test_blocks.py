import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.interventions import capture
from rayjobs.models.blocks import ARCHS, _resolve, arch_info, get_blocks, n_layers
from tests.unit.tiny_models import FAMILIES, build


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resid_post_matches_output_hidden_states(family):
    model = build(family)
    ids = torch.randint(3, 60, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    n = n_layers(model)
    got = capture(model, ids, mask, [f"layers.{layer}.resid_post" for layer in range(n)])
    for layer in range(n - 1):
        torch.testing.assert_close(got[f"layers.{layer}.resid_post"], ref[layer + 1])
    # HF's last hidden state comes after the final norm; our site is the raw block output.
    final_norm = _resolve(model, arch_info(model).final_norm)
    torch.testing.assert_close(final_norm(got[f"layers.{n - 1}.resid_post"]), ref[n])


def test_every_table_family_is_tested():
    # Every row of the block table has a tiny model above (compared with output_hidden_states), and no
    # tiny model tests a row that is not in the table: adding a row without its test fails here.
    tested = {build(f).config.model_type for f in FAMILIES}
    assert tested == set(ARCHS), f"rows without a test: {sorted(set(ARCHS) - tested)}"


def test_unsupported_architecture_is_a_user_error():
    model = build("llama")
    model.config.model_type = "mamba"
    with pytest.raises(UserError, match="mamba.*not supported"):
        get_blocks(model)


def test_describe_reads_config_and_tokenizer_without_weights(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from rayjobs.models.loading import describe, load_model, load_tokenizer, tokenizer_hash

    model = build("gpt2")
    model.save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "a": 1}, unk_token="<pad>")),
                                  pad_token="<pad>", eos_token="<pad>")
    tok.save_pretrained(tmp_path)
    info = describe(str(tmp_path))
    assert info == {"n_layers": n_layers(load_model(str(tmp_path))), "d_model": 32,
                    "tokenizer_hash": tokenizer_hash(load_tokenizer(str(tmp_path)))}
    (tmp_path / "model.safetensors").unlink()  # weights are never read
    assert describe(str(tmp_path))["n_layers"] == 3


def test_readme_lists_every_supported_architecture():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [arch for arch in ARCHS if f"`{arch}`" not in readme] == []
