"""The README and docs/ stay true: a short README that opens with the two commands, a walkthrough that
covers the model's whole life, configuration tables equal to the settings classes, links that resolve.

The walkthrough's commands themselves are run by tests/integration/test_readme_walkthrough.py.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from service.autoscaler.settings import AutoscalerSettings
from service.settings import Settings
from tests.docs.console import Step, block_steps, console_blocks, console_steps, unmatched

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
MAX_README_LINES = 300
# The classes whose every field configuration.md lists, with the environment prefix of each.
SETTINGS_CLASSES: list[tuple[type[BaseSettings], str]] = [
    (Settings, "PROPENSITY_"),
    (AutoscalerSettings, "PROPENSITY_AUTOSCALER_"),
]
# The walkthrough's stages, in the order a newcomer goes through them.
WALKTHROUGH = [
    "make serve",
    "curl -s localhost:1313/predict",
    "propensity make-data",
    "propensity train --data",
    "propensity registry list",
    "propensity registry promote",
    "propensity drift-report --data",
    "propensity score",
]


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", prose)


# --- the README's shape ---


def test_the_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


def test_the_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    before_first_section = text.split("\n## ", 1)[0]
    first_block = before_first_section.split("```", 2)[1].splitlines()
    commands = [line.split("#", 1)[0].strip() for line in first_block[1:]]
    assert commands == ["make serve", "make test"], first_block


def test_the_walkthrough_goes_through_the_models_life_in_order() -> None:
    commands = [step.command for step in console_steps(README.read_text())]
    positions = []
    for stage in WALKTHROUGH:
        found = [i for i, command in enumerate(commands) if command.startswith(stage)]
        assert found, f"no README command starts with {stage!r}: {commands}"
        positions.append(found[0])
    assert positions == sorted(positions), list(zip(WALKTHROUGH, positions, strict=True))
    assert commands[0] == "make serve", "the walkthrough starts the service before it talks to it"


def test_every_walkthrough_command_shows_what_it_prints() -> None:
    steps = console_steps(README.read_text())
    silent = [s.command for s in steps if not s.expected and not s.command.startswith("export ")]
    assert silent == [], "a command with no output shown cannot be checked"


# --- links ---


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # [text](url) -> text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", without_code(path.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert broken == []


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert unlinked == []


# --- the configuration tables ---


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Every table row whose first cell is a `PROPENSITY_*` variable: variable -> the other cells."""
    rows: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and (name := re.fullmatch(r"`(PROPENSITY_[A-Z0-9_]+)`", cells[0])):
            assert name.group(1) not in rows, f"{name.group(1)} is listed twice"
            rows[name.group(1)] = cells[1:]
    return rows


def rendered_default(default: Any) -> str:
    """How a table shows a default: `value`, or unset for None."""
    if default is None:
        return "unset"
    if isinstance(default, tuple | list):  # a list is set as JSON in the environment
        return f"`{json.dumps(list(default))}`"
    return f"`{default.value if isinstance(default, Enum) else default}`"


def environment_names(cls: type[BaseSettings], prefix: str) -> dict[str, str]:
    return {f"{prefix}{name.upper()}": name for name in cls.model_fields}


@pytest.mark.parametrize(("cls", "prefix"), SETTINGS_CLASSES, ids=lambda v: getattr(v, "__name__", v))
def test_the_configuration_table_lists_every_setting_with_its_default(
    cls: type[BaseSettings], prefix: str
) -> None:
    longer = [p for _, p in SETTINGS_CLASSES if p != prefix and p.startswith(prefix)]
    rows = {n: c for n, c in table_rows(CONFIGURATION.read_text()).items() if n.startswith(prefix)}
    rows = {n: c for n, c in rows.items() if not any(n.startswith(p) for p in longer)}
    fields = environment_names(cls, prefix)
    assert sorted(set(fields) - set(rows)) == [], "settings missing from docs/configuration.md"
    assert sorted(set(rows) - set(fields)) == [], f"documented, but not fields of {cls.__name__}"
    wrong = {
        name: (cells[0], rendered_default(cls.model_fields[field].default))
        for name, field in fields.items()
        if (cells := rows[name])[0] != rendered_default(cls.model_fields[field].default)
    }
    assert wrong == {}, "documented default != the class's default"
    assert [n for n, cells in rows.items() if len(cells) < 2 or not cells[1]] == [], "a row without meaning"


def test_every_setting_is_described() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_every_propensity_variable_the_docs_name_exists() -> None:
    known = {name for cls, prefix in SETTINGS_CLASSES for name in environment_names(cls, prefix)}
    stale = set()
    for path in markdown_files():
        for token in re.findall(r"PROPENSITY_[A-Z0-9_]+", path.read_text()):
            is_prefix = token.endswith("_")  # a family: PROPENSITY_DRIFT_JS_*, PROPENSITY_AUTOSCALER_
            if not (any(k.startswith(token) for k in known) if is_prefix else token in known):
                stale.add(f"{path.name}: {token}")
    assert sorted(stale) == []


# --- the console-block reader the walkthrough test relies on ---


CONSOLE_SAMPLE = """
```console
$ echo one \\
    two
one two
$ printf '%s\\n' 'a
b'
a
...
$ true
...
```
"""


def test_console_commands_continue_over_backslashes_and_open_quotes() -> None:
    steps = block_steps(console_blocks(CONSOLE_SAMPLE)[0])
    assert steps == [
        Step("echo one \\\n    two", ("one two",)),
        Step("printf '%s\\n' 'a\nb'", ("a", "...")),
        Step("true", ("...",)),
    ]


def test_expected_output_matches_in_order_with_elisions() -> None:
    assert (
        unmatched(
            ("registered propensity/v2 in ...s: AUC ...", "..."),
            "x\nregistered propensity/v2 in 5.1s: AUC 0.8",
        )
        == []
    )
    assert unmatched(("b", "a"), "a\nb") == ["a"]  # order matters
    assert unmatched(("v2 ... production",), "v1 2026 production\nv2 2026 staging") == ["v2 ... production"]
