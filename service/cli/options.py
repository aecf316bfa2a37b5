"""Options and option parsers several command groups share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from service.model.training import Recipe

ArtifactsDir = Annotated[
    Path | None,
    typer.Option(
        "--artifacts-dir",
        help="registry root (default: PROPENSITY_ARTIFACTS_DIR, else ./artifacts)",
        show_default=False,
    ),
]


def duration(text: str) -> float:
    """Seconds in a duration such as 15m, 2h or 1d; a bad one is a bad option (exit 2)."""
    from service.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def recipe(name: str) -> Recipe:
    """The training recipe of that name; an unknown one is a bad option (exit 2)."""
    from service.model.training import recipe_named

    try:
        return recipe_named(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
