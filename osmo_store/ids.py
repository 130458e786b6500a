"""Names and references: validation and parsing of dataset names, tags and ``NAME[:REF]`` strings.

A reference is ``NAME`` (the latest version), ``NAME:TAG`` or ``NAME:VERSION`` (a positive integer).
``latest`` is a reserved tag maintained automatically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from osmo_store.errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_NAME_LEN = 128
LATEST = "latest"


def check_name(name: str, what: str = "dataset name") -> str:
    """Return ``name`` if it is a valid dataset or tag name, else raise UsageError naming it."""
    if not name or len(name) > MAX_NAME_LEN or not NAME_RE.match(name):
        raise UsageError(
            f"invalid {what} {name!r}: use 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ -"
        )
    return name


def check_tag(tag: str) -> str:
    """A tag is a name that is not all digits (those are version numbers)."""
    check_name(tag, "tag")
    if tag.isdigit():
        raise UsageError(f"invalid tag {tag!r}: a tag cannot be a number (numbers are versions)")
    return tag


@dataclass(frozen=True)
class Ref:
    """A parsed ``NAME[:REF]``: ``version`` or ``tag`` (or neither: the latest version)."""

    name: str
    tag: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        return self.name


def parse_ref(text: str) -> Ref:
    """Parse ``NAME``, ``NAME:TAG`` or ``NAME:VERSION``."""
    name, sep, ref = text.partition(":")
    check_name(name)
    if not sep:
        return Ref(name)
    if not ref:
        raise UsageError(f"invalid reference {text!r}: nothing after ':'")
    if ref.isdigit():
        version = int(ref)
        if version < 1:
            raise UsageError(f"invalid reference {text!r}: versions start at 1")
        return Ref(name, version=version)
    check_name(ref, "tag")
    return Ref(name, tag=ref)


def parse_key_value(text: str, what: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE`` (used by --metadata and --label)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"invalid {what} {text!r}: expected KEY=VALUE")
    return key, value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``90s``, ``30m``, ``1h30m``, ``7d``, ``2w`` or a bare number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise UsageError(f"{what}: {text!r} is not a duration (e.g. 90s, 30m, 1h30m, 7d, 2w)") from None
    if seconds < 0 or seconds != seconds:
        raise UsageError(f"{what}: {text!r} must not be negative")
    return seconds
