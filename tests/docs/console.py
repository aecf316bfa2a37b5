"""The `console` blocks of a Markdown file as steps: the `$ ` commands and the output shown under each.

A command starts at a line `$ ...` and goes on over the next lines while it ends with a backslash or has a
quote still open (as bash reads it); the lines after it, up to the next command or the end of the block,
are the output the reader is told to expect. In that output `...` stands for text left out: a line of its
own skips any number of lines, and inside a line it stands for any text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

FENCE = re.compile(r"^```(\S*)\s*$")
PROMPT = "$ "
ELISION = "..."


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]

    def replaced(self, old: str, new: str) -> Step:
        """The same step with `old` replaced by `new` in the command and the expected output."""
        return Step(self.command.replace(old, new), tuple(line.replace(old, new) for line in self.expected))


def console_blocks(markdown: str) -> list[list[str]]:
    """The lines of every ```console block, in order."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in markdown.splitlines():
        fence = FENCE.match(line)
        if current is None:
            if fence and fence.group(1) == "console":
                current = []
        elif fence:
            blocks.append(current)
            current = None
        else:
            current.append(line)
    if current is not None:
        raise ValueError("a console block is not closed")
    return blocks


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # a quote still open: bash would read on
        return False
    return True


def block_steps(lines: list[str]) -> list[Step]:
    steps: list[Step] = []
    i = 0
    if lines and not lines[0].startswith(PROMPT):
        raise ValueError(f"a console block must start with a command: {lines[0]!r}")
    while i < len(lines):
        command = lines[i][len(PROMPT) :]
        i += 1
        while not _complete(command):
            if i == len(lines):
                raise ValueError(f"the command never ends: {command!r}")
            command += "\n" + lines[i]
            i += 1
        expected: list[str] = []
        while i < len(lines) and not lines[i].startswith(PROMPT):
            expected.append(lines[i])
            i += 1
        steps.append(Step(command, tuple(expected)))
    return steps


def console_steps(markdown: str) -> list[Step]:
    """Every command of every console block, in the order a reader runs them."""
    return [step for block in console_blocks(markdown) for step in block_steps(block)]


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in expected.strip().split(ELISION)]
    return re.compile(".*".join(parts))


def unmatched(expected: tuple[str, ...], output: str) -> list[str]:
    """The expected lines that `output` lacks, each looked for after the line the previous one matched;
    `...` lines and blank lines are skipped. Empty when the output shows everything the README says."""
    actual = [line.rstrip() for line in output.splitlines()]
    missing: list[str] = []
    position = 0
    for line in expected:
        if line.strip() in ("", ELISION):
            continue
        pattern = line_pattern(line)
        found = next((j for j in range(position, len(actual)) if pattern.fullmatch(actual[j].strip())), None)
        if found is None:
            missing.append(line)
        else:
            position = found + 1
    return missing
