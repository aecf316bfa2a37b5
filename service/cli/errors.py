"""The CLI's one error handler: what a user can cause ends as one line on stderr and an exit code.

- PropensityError (bad data, unknown version, tampered artifact, ...): `error: <detail>`, exit 1.
- A PROPENSITY_* setting that does not validate: `error: <VARIABLE>=<value>: <reason>` on one line, exit 2
  (the code click gives a bad option).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings
from typer.core import TyperGroup

from service.errors import PropensityError

FAILED = 1
BAD_SETTING = 2
_MAX_VALUE_CHARS = 60  # a value is shown to recognise it, not to echo a whole pasted blob


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line on stderr and typer.Exit."""
    try:
        yield
    except PropensityError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(FAILED) from None
    except ValidationError as exc:
        line = settings_problem(exc)
        if line is None:  # not a settings class: a bug, keep the traceback
            raise
        typer.echo(f"error: {line}", err=True)
        raise typer.Exit(BAD_SETTING) from None


class ReportingGroup(TyperGroup):
    """The root command group: every command, nested groups included, runs inside `reported_errors`."""

    # ctx is typer's own (vendored) click Context; its class is not public, hence Any.
    def invoke(self, ctx: Any) -> Any:
        with reported_errors():
            return super().invoke(ctx)


def settings_problem(exc: ValidationError) -> str | None:
    """One line naming every bad environment variable and why; None if `exc` is not about settings."""
    settings = _settings_class(exc.title)
    if settings is None:
        return None
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    return "; ".join(_describe(error, settings, prefix) for error in exc.errors(include_url=False))


def _settings_class(title: str) -> type[BaseSettings] | None:
    pending = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls.__name__ == title:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _describe(error: ErrorDetails, settings: type[BaseSettings], prefix: str) -> str:
    reason = error["msg"].removeprefix("Value error, ")
    if error["loc"]:
        variable = _variable(str(error["loc"][0]), settings, prefix)
        if error["type"] == "missing":
            return f"{variable}: {reason}"
        return f"{variable}={_shown(error['input'])}: {reason}"
    # A check across fields (a model validator): name the fields its message mentions.
    named = [
        _variable(name, settings, prefix)
        for name in settings.model_fields
        if re.search(rf"\b{re.escape(name)}\b", reason)
    ]
    return f"{', '.join(named) or prefix + '*'}: {reason}"


def _variable(field: str, settings: type[BaseSettings], prefix: str) -> str:
    info = settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias.upper() if isinstance(alias, str) else prefix + field.upper()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."
