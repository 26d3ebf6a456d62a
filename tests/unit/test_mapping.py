"""Mappers, their training, metrics and save/load; tiny tensors, CPU, one thread."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch.testing import assert_close

from rayjobs.errors import UserError
from rayjobs.mapping import (
    AffineMapper,
    AutoencoderMapper,
    build_mapper,
    check_mapper_dims,
    cosine,
    fvu,
    load_mapper,
    map_vectors,
    mse,
    save_mapper,
    train_mapper,
)

torch.set_num_threads(1)

META = {
    "source_model": "src-tiny",
    "source_site": "layers.1.resid_post",
    "target_model": "tgt-tiny",
    "target_site": "layers.2.resid_post",
}


def _one_line_error(excinfo: pytest.ExceptionInfo[UserError], *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _linear_data(n: int = 256, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    w, b = torch.randn(4, 3, generator=g), torch.randn(3, generator=g)
    return x, x @ w + b + 0.01 * torch.randn(n, 3, generator=g)


def _nonlinear_data(n: int = 640, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    a = torch.randn(4, 3, generator=g)
    return x, 2 * torch.relu(x @ a) + x[:, :3] ** 2


# --- mappers -------------------------------------------------------------------------------


def test_autoencoder_hidden_is_paper_default() -> None:
    m = AutoencoderMapper(16, 64)
    assert m.hidden == 32  # sqrt(16 * 64)
    assert m.encoder.weight.shape == (32, 16) and m.decoder.weight.shape == (64, 32)
    assert AutoencoderMapper(10, 20).hidden == 14  # int(sqrt(200)) = int(14.14)
    assert AutoencoderMapper(10, 20, hidden=5).hidden == 5
    assert build_mapper("autoencoder", 10, 20).hidden == 14
    assert AffineMapper(10, 20).hidden is None


def test_autoencoder_forward_is_linear_relu_linear() -> None:
    m = AutoencoderMapper(5, 3, hidden=4)
    x = torch.randn(7, 5)
    by_hand = torch.relu(x @ m.encoder.weight.T + m.encoder.bias) @ m.decoder.weight.T + m.decoder.bias
    assert_close(m(x), by_hand)


def test_build_mapper_rejects_bad_input() -> None:
    with pytest.raises(UserError) as e:
        build_mapper("mlp", 4, 3)
    _one_line_error(e, "mapper.kind", "'mlp'", "affine", "autoencoder")
    with pytest.raises(UserError) as e:
        build_mapper("affine", 4, 3, hidden=8)
    _one_line_error(e, "hidden")
    with pytest.raises(UserError) as e:
        build_mapper("autoencoder", 0, 3)
    _one_line_error(e, "d_in", "0")


def test_map_vectors_shapes_dtypes_and_inputs() -> None:
    m = AutoencoderMapper(4, 6)
    h = torch.randn(2, 3, 4)
    out = map_vectors(m, h, chunk_rows=4)  # 6 rows in chunks of 4 exercises the chunking
    assert out.shape == (2, 3, 6) and out.dtype == torch.float32 and not out.requires_grad
    with torch.no_grad():
        assert_close(out, m(h))
    assert_close(map_vectors(m, h.half()), m(h.half().float()).detach())  # fp16 in, fp32 compute
    assert map_vectors(m, h, out_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert_close(map_vectors(m, h.numpy()), out)
    with pytest.raises(UserError) as e:
        map_vectors(m, torch.randn(3, 5))
    _one_line_error(e, "d_src=4")


# --- metrics -------------------------------------------------------------------------------

Y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
Y_HAT = torch.tensor([[1.0, 1.0], [0.0, 1.0], [3.0, 0.0]])


def test_mse_by_hand() -> None:
    # squared errors: 0+1, 0+1, 0+16 = 18 over 6 entries
    assert mse(Y, Y_HAT) == pytest.approx(3.0)


def test_cosine_by_hand() -> None:
    rows = [1 / (1 * math.sqrt(2)), 2 / (2 * 1), 9 / (5 * 3)]
    assert cosine(Y, Y_HAT) == pytest.approx(sum(rows) / 3)
    assert cosine(torch.zeros(1, 2), torch.ones(1, 2)) == 0.0  # zero row: no NaN


def test_fvu_by_hand() -> None:
    mean = [4 / 3, 2.0]
    total = sum((Y[i, j].item() - mean[j]) ** 2 for i in range(3) for j in range(2))  # 114/9
    assert total == pytest.approx(114 / 9)
    assert fvu(Y, Y_HAT) == pytest.approx(18 / total)
    assert fvu(Y, Y) == 0.0
    assert fvu(Y, Y.mean(0, keepdim=True).expand_as(Y)) == pytest.approx(1.0)
    assert math.isnan(fvu(torch.ones(3, 2), Y_HAT))


# --- training ------------------------------------------------------------------------------


def test_affine_recovers_least_squares_solution() -> None:
    x, y = _linear_data()
    m, metrics = train_mapper("affine", x, y, x[:32], y[:32], lr=3e-2, epochs=300, batch_size=256)
    closed = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], 1), y).solution  # [d_src + 1, d_tgt]
    assert_close(m.linear.weight.detach().T, closed[:4], atol=1e-4, rtol=0)
    assert_close(m.linear.bias.detach(), closed[4], atol=1e-4, rtol=0)
    assert metrics["val"]["fvu"] < 1e-3 and metrics["val"]["cosine"] > 0.999


def test_autoencoder_beats_constant_and_affine_on_nonlinear_target() -> None:
    x, y = _nonlinear_data()
    xt, yt, xv, yv = x[:512], y[:512], x[512:], y[512:]
    kw = dict(lr=1e-2, epochs=60, batch_size=128)
    _, ae = train_mapper("autoencoder", xt, yt, xv, yv, hidden=32, **kw)
    _, aff = train_mapper("affine", xt, yt, xv, yv, **kw)
    constant_fvu = fvu(yv, yt.mean(0, keepdim=True).expand_as(yv))  # best constant from train data
    assert constant_fvu > 0.9
    assert ae["val"]["fvu"] < 0.1
    assert ae["val"]["fvu"] < aff["val"]["fvu"]


def test_training_is_seeded_and_reports_history() -> None:
    x, y = _nonlinear_data(n=200)
    seen: list[dict[str, float]] = []
    rng_before = torch.get_rng_state()
    data = (x[:150], y[:150], x[150:], y[150:])
    m1, met1 = train_mapper("autoencoder", *data, epochs=3, batch_size=32, seed=7, progress=seen.append)
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's global RNG untouched
    m2, met2 = train_mapper("autoencoder", *data, epochs=3, batch_size=32, seed=7)
    m3, _ = train_mapper("autoencoder", *data, epochs=3, batch_size=32, seed=8)
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert not torch.equal(m1.encoder.weight, m3.encoder.weight)
    assert met1 == met2
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert [r["val_loss"] for r in seen] == met1["history"]["val_loss"]
    assert met1["history"]["val_loss"][-1] == pytest.approx(met1["val"]["mse"])
    assert met1["n_train"] == 150 and met1["n_val"] == 50


def test_training_accepts_numpy_fp16() -> None:
    x, y = _linear_data(n=64)
    m, met = train_mapper("affine", x.numpy().astype(np.float16), y.numpy(), x[:8].numpy(), y[:8].numpy(), epochs=1)
    assert m.linear.weight.dtype == torch.float32 and math.isfinite(met["val"]["mse"])


def test_training_rejects_bad_input() -> None:
    x, y = _linear_data(n=16)
    with pytest.raises(UserError) as e:
        train_mapper("affine", x, y[:10], x, y)
    _one_line_error(e, "fit.train", "16", "10")
    with pytest.raises(UserError) as e:
        train_mapper("affine", x, y, x[:, :3], y)
    _one_line_error(e, "fit.val")
    with pytest.raises(UserError) as e:
        train_mapper("affine", x, y, x, y, lr=0.0)
    _one_line_error(e, "fit.lr")


# --- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["affine", "autoencoder"])
def test_save_load_round_trip(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    m = build_mapper(kind, 6, 5)
    metrics = {"val": {"mse": 0.5, "fvu": np.float32(0.25)}, "n_train": np.int64(3)}
    digest = save_mapper(m, tmp_path / "m", {**META, "metrics": metrics})
    assert digest == hashlib.sha256((tmp_path / "m" / "mapper.safetensors").read_bytes()).hexdigest()
    # only the two files: no temp files left behind
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["mapper.json", "mapper.safetensors"]

    def no_pickle(*a: object, **k: object) -> None:
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, info = load_mapper(tmp_path / "m")
    h = torch.randn(4, 6)
    assert torch.equal(map_vectors(loaded, h), map_vectors(m, h))
    assert not loaded.training
    got = (info["kind"], info["d_in"], info["d_out"], info["sha256"], info["format_version"])
    assert got == (kind, 6, 5, digest, 1)
    assert info["hidden"] == (None if kind == "affine" else 5)
    assert info["source_site"] == "layers.1.resid_post" and info["target_model"] == "tgt-tiny"
    assert info["metrics"]["n_train"] == 3 and info["metrics"]["val"]["fvu"] == 0.25  # numpy scalars as JSON numbers


def test_save_requires_provenance(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target_site"):
        save_mapper(AffineMapper(2, 2), tmp_path, {k: v for k, v in META.items() if k != "target_site"})


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_mapper(AutoencoderMapper(6, 5), tmp_path / "m", META)
    return tmp_path / "m"


def _edit_json(d: Path, **changes: object) -> None:
    info = json.loads((d / "mapper.json").read_text())
    (d / "mapper.json").write_text(json.dumps({**info, **changes}))


def test_tampered_weights_are_rejected(saved: Path) -> None:
    path = saved / "mapper.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01  # one bit in the last weight
    path.write_bytes(bytes(blob))
    with pytest.raises(UserError) as e:
        load_mapper(saved)
    _one_line_error(e, "checksum mismatch", "mapper.safetensors")


def test_missing_files_are_user_errors(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_mapper(tmp_path / "nowhere")
    _one_line_error(e, "mapper.json")
    (saved / "mapper.safetensors").unlink()
    with pytest.raises(UserError) as e:
        load_mapper(saved)
    _one_line_error(e, "mapper.safetensors", "missing")


def test_malformed_json_is_a_user_error(saved: Path) -> None:
    (saved / "mapper.json").write_text("{not json")
    with pytest.raises(UserError) as e:
        load_mapper(saved)
    _one_line_error(e, "not valid JSON")


def test_unknown_kind_in_json_is_a_user_error(saved: Path) -> None:
    _edit_json(saved, kind="mlp")
    with pytest.raises(UserError) as e:
        load_mapper(saved)
    _one_line_error(e, "'mlp'", "mapper.json")


def test_json_shapes_must_match_weights(saved: Path) -> None:
    _edit_json(saved, d_in=7)
    with pytest.raises(UserError) as e:
        load_mapper(saved)
    _one_line_error(e, "shapes")


def test_check_mapper_dims(saved: Path) -> None:
    _, info = load_mapper(saved)
    check_mapper_dims(info, 6, 5)
    with pytest.raises(UserError) as e:
        check_mapper_dims(info, 6, 8)
    _one_line_error(e, "d_in=6", "d_out=5", "d_src=6", "d_tgt=8")


@pytest.mark.parametrize("poison", ["weights", "metrics"])
def test_non_finite_mapper_is_never_saved(tmp_path: Path, poison: str) -> None:
    """Issue 16 item 1: a NaN mapper (or one whose metrics are NaN) was saved, logged and published."""
    m = build_mapper("affine", 6, 5)
    metrics = {"val": {"mse": 0.5, "cosine": 0.9, "fvu": 0.1}, "history": {"train_loss": [1.0, 0.5]}}
    if poison == "weights":
        with torch.no_grad():
            next(m.parameters()).view(-1)[0] = float("nan")
    else:
        metrics["history"]["train_loss"][1] = float("inf")
    needle = r"NaN/Inf in \S+ \(1 of \d+ values\)" if poison == "weights" else r"history.train_loss.1=inf \(NaN/Inf\)"
    with pytest.raises(UserError, match=needle):
        save_mapper(m, tmp_path / "m", {**META, "metrics": metrics})
    assert not (tmp_path / "m").exists()


def test_a_nan_mapper_saved_before_the_check_is_refused_on_load(tmp_path: Path) -> None:
    m = build_mapper("affine", 6, 5)
    save_mapper(m, tmp_path / "m", META)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    next(iter(state.values())).view(-1)[0] = float("nan")
    blob = safetensors.torch.save(state, metadata={"format": "pt"})
    (tmp_path / "m" / "mapper.safetensors").write_bytes(blob)
    info = json.loads((tmp_path / "m" / "mapper.json").read_text())
    (tmp_path / "m" / "mapper.json").write_text(json.dumps({**info, "sha256": hashlib.sha256(blob).hexdigest()}))
    with pytest.raises(UserError, match=r"mapper: .*mapper.safetensors: NaN/Inf in .*re-run the fit stage"):
        load_mapper(tmp_path / "m")


def test_lstsq_solver_finds_the_exact_affine_map_that_adamw_only_approaches() -> None:
    """Rows with far-apart per-dimension scales, y an exact affine function of x (the identity-plus-shift a switch
    between two copies of a block needs, scrambled): the closed form recovers it to float precision, also through the
    mapper's standardisation; 20 AdamW epochs do not. The autoencoder has no closed form: a one-line error."""
    from rayjobs.mapping.train import train_mapper

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 12, generator=g) * torch.logspace(-1, 3, 12)
    w, b = torch.randn(12, 12, generator=g), torch.randn(12, generator=g) * 50
    y = x @ w + b
    exact, m = train_mapper("affine", x[:2500], y[:2500], x[2500:], y[2500:], standardize=True, solver="lstsq")
    adamw, m_adamw = train_mapper("affine", x[:2500], y[:2500], x[2500:], y[2500:], standardize=True, epochs=20)
    assert m["val"]["fvu"] < 1e-9 and len(m["history"]["val_loss"]) == 1
    assert m_adamw["val"]["fvu"] > 100 * m["val"]["fvu"]
    torch.testing.assert_close(exact(x[2500:]), y[2500:], rtol=1e-4, atol=1e-3)
    with pytest.raises(UserError, match="fit.solver: 'lstsq' fits only kind 'affine'"):
        train_mapper("autoencoder", x[:2500], y[:2500], x[2500:], y[2500:], solver="lstsq")


def test_cosine_schedule_is_adamw_with_the_lr_decayed_along_a_half_cosine_per_step() -> None:
    """Against a hand-written loop: the same seeded init and row order, AdamW with lr_k = lr (1 + cos(pi k / K)) / 2 set
    before step k of K; the constant schedule differs from it, and an unknown schedule is a one-line error."""
    from rayjobs.mapping.train import _seeded_mapper, train_mapper

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, 6, generator=g), torch.randn(100, 5, generator=g)
    lr, epochs, batch = 3e-2, 3, 32
    cosine, _ = train_mapper("autoencoder", x, y, x[:10], y[:10], lr=lr, epochs=epochs, batch_size=batch, hidden=7,
                             seed=4, lr_schedule="cosine")
    constant, _ = train_mapper("autoencoder", x, y, x[:10], y[:10], lr=lr, epochs=epochs, batch_size=batch, hidden=7,
                               seed=4)
    ref = _seeded_mapper("autoencoder", 6, 5, 7, 4, "cpu")
    opt = torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=0.0)  # train_mapper's default
    order_gen, total, k = torch.Generator().manual_seed(4), epochs * math.ceil(100 / batch), 0
    for _ in range(epochs):
        order = torch.randperm(100, generator=order_gen)
        for start in range(0, 100, batch):
            idx = order[start : start + batch]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / total))
            loss = torch.nn.functional.mse_loss(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            k += 1
    for name, p in ref.state_dict().items():
        assert_close(cosine.state_dict()[name], p, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(constant.state_dict()["decoder.weight"], ref.state_dict()["decoder.weight"], atol=1e-4)
    with pytest.raises(UserError, match="fit.lr_schedule: got 'linear'; allowed: constant, cosine"):
        train_mapper("affine", x, y, x[:10], y[:10], lr_schedule="linear")
