"""A task's ``exitActions``: which exit codes COMPLETE, FAIL or RESCHEDULE the task.

Codes are written as OSMO does, ``start-end`` ranges and single codes separated by commas
(``COMPLETE: 0``, ``RESCHEDULE: 1-5,255``, ``FAIL: 1-255``). Action names are case-insensitive.
Codes are user exit codes 0-255; the ranges of different actions must not overlap (OSMO asks the same).
A code no rule names gets OSMO's default: 0 is COMPLETE, anything else FAIL. Exit codes above 255 are
OSMO's own (2010 input download failed, 2012 output upload failed, 3000 upstream failed, ...) and are
never subject to a rule: they FAIL.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

MAX_USER_CODE = 255
_CODES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


class ExitAction(enum.Enum):
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    RESCHEDULE = "RESCHEDULE"


@dataclass(frozen=True)
class CodeRange:
    """An inclusive range of exit codes."""

    start: int
    end: int

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and self.start <= code <= self.end

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


@dataclass(frozen=True)
class CodeSet:
    """A set of exit codes, kept as the sorted, merged ranges that were written."""

    ranges: tuple[CodeRange, ...]

    def __contains__(self, code: object) -> bool:
        return any(code in r for r in self.ranges)

    def codes(self) -> frozenset[int]:
        return frozenset(c for r in self.ranges for c in range(r.start, r.end + 1))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def parse_codes(value: object) -> CodeSet:
    """Parse ``0``, ``"1-5,255"`` or ``"0, 1-10, 16"`` into a ``CodeSet``. Raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected exit codes such as 0 or 1-5,255, got {value!r}")
    text = str(value).replace(" ", "")
    if not _CODES.match(text):
        raise ValueError(f"bad exit codes {value!r}: use codes and start-end ranges separated by commas "
                         "(e.g. 0 or 1-5,255)")
    ranges: list[CodeRange] = []
    for part in text.split(","):
        start, _, end = part.partition("-")
        lo, hi = int(start), int(end or start)
        if lo > hi:
            raise ValueError(f"bad exit code range {part!r}: start is after end")
        if hi > MAX_USER_CODE:
            raise ValueError(f"exit code {hi} is out of range: exit actions apply to codes 0-{MAX_USER_CODE}")
        ranges.append(CodeRange(lo, hi))
    ranges.sort(key=lambda r: r.start)
    merged: list[CodeRange] = []
    for r in ranges:
        if merged and r.start <= merged[-1].end + 1:
            merged[-1] = CodeRange(merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return CodeSet(tuple(merged))


def parse_action(name: object) -> ExitAction:
    """``complete``/``COMPLETE`` -> ``ExitAction.COMPLETE``. Raises ``ValueError``."""
    try:
        return ExitAction(str(name).upper())
    except ValueError:
        raise ValueError(f"unknown exit action {name!r} (use COMPLETE, FAIL or RESCHEDULE)") from None


@dataclass(frozen=True)
class ExitActions:
    """The rules of one task. ``action_for(code)`` says what an exit code does."""

    rules: dict[ExitAction, CodeSet] = field(default_factory=dict)

    def action_for(self, code: int) -> ExitAction:
        if 0 <= code <= MAX_USER_CODE:
            for action, codes in self.rules.items():
                if code in codes:
                    return action
        return ExitAction.COMPLETE if code == 0 else ExitAction.FAIL

    def overlaps(self) -> list[tuple[ExitAction, ExitAction, frozenset[int]]]:
        """Pairs of actions whose codes overlap, with the shared codes (a valid spec has none)."""
        found = []
        items = list(self.rules.items())
        for i, (a, codes_a) in enumerate(items):
            for b, codes_b in items[i + 1:]:
                shared = codes_a.codes() & codes_b.codes()
                if shared:
                    found.append((a, b, shared))
        return found

    def to_dict(self) -> dict[str, str]:
        return {action.value: str(codes) for action, codes in self.rules.items()}
