"""The CLI's one error handler: what a user can cause ends as one line on stderr and an exit code.

- PropensityError (bad data, unknown version, tampered artifact, ...): `error: <detail>`, exit 1.
- A PROPENSITY_* setting that does not validate: `error: <VARIABLE>=<value>: <reason>` on one line, exit 2
  (the code click gives a bad option).
- A command that needs an extra this installation does not have (the serving image has none): `error:`
  naming the extra to install, exit 1.
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
# The top-level modules of each optional extra (pyproject.toml's [project.optional-dependencies])
EXTRA_OF_MODULE = {
    **dict.fromkeys(("pandas", "sklearn", "statsmodels", "scipy", "joblib", "matplotlib"), "train"),
    **dict.fromkeys(("pyarrow", "distributed", "dask"), "files"),
    "mlflow": "mlflow",
}
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
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:  # not one of ours: a broken installation, keep the traceback
            raise
        typer.echo(f"error: {missing_extra_message(exc, extra)}", err=True)
        raise typer.Exit(FAILED) from None


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module `exc` did not find, if it is one of the extras' modules."""
    return EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])


def missing_extra_message(exc: ModuleNotFoundError, extra: str) -> str:
    return (
        f"this command needs {exc.name!r}, from the {extra!r} extra, which this installation does not have "
        f"(a serving install has only what serving needs): pip install 'propensity-service[{extra}]'"
    )


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
