"""Terminal rendering of the fit stage's result: held-out FVU and cosine per mapper kind and pairing (a table on
stderr), then the whole result as JSON on stdout, as every stage prints it."""

from __future__ import annotations

from typing import Any

from cli.stages import print_result


def _rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]]:
    """(kind, pairing, val, val_with_sinks, pairing stats), the fitted pairing first, then the baseline's."""
    parts = [result] + ([result["baseline"]] if "baseline" in result else [])
    return [(kind, part["pairing"]["pairing"], val, part.get("val_with_sinks", {}).get(kind), part["pairing"])
            for part in parts for kind, val in part["val"].items()]


def print_fit(result: dict[str, Any]) -> None:
    """One line per (kind, pairing): FVU and cosine without the attention-sink rows, then with them."""
    if not isinstance(result, dict) or not {"val", "pairing", "source_site"} <= result.keys():
        return print_result(result)  # not a fit result (a test's stand-in stage)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fit {result['source_site']} -> {result['target_site']}: held-out rows")
    for column in ("kind", "pairing", "FVU", "cosine", "FVU with sinks", "cosine with sinks", "unpaired target rows"):
        table.add_column(column, justify="left" if column in ("kind", "pairing") else "right")
    for kind, pairing, val, sinks, stats in _rows(result):
        with_sinks = ("-", "-") if sinks is None else (f"{sinks['fvu']:.3f}", f"{sinks['cosine']:.3f}")
        table.add_row(kind, pairing, f"{val['fvu']:.3f}", f"{val['cosine']:.3f}", *with_sinks,
                      f"{stats['unpaired_target']} ({stats['unpaired_share']:.1%})")
    Console(stderr=True).print(table)
    print_result(result)
