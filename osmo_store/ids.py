"""Names and references: validation and parsing of dataset names, tags and ``NAME[:REF]`` strings.

A reference is ``NAME`` (the latest version), ``NAME:TAG`` or ``NAME:VERSION`` (a positive integer
written in ASCII digits, at most ``MAX_VERSION``: versions are packed as unsigned 64-bit keys in the
index). ``latest`` is a reserved tag maintained automatically. Everything malformed is a
``UsageError`` naming the text and the rule it breaks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from osmo_store.errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_NAME_LEN = 128
MAX_VERSION = 2**63 - 1  # fits every signed or unsigned 64-bit field that stores a version
LATEST = "latest"
_NUMBER = re.compile(r"-?[0-9]+")


def shown(text: str, limit: int = 200) -> str:
    """``text`` quoted for a one-line message, shortened when long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def check_name(name: str, what: str = "dataset name") -> str:
    """Return ``name`` if it is a valid dataset or tag name, else raise UsageError naming it."""
    if not name or len(name) > MAX_NAME_LEN or not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid {what} {shown(name)}: use 1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ -"
        )
    return name


def check_tag(tag: str) -> str:
    """A tag is a name that is not a number (numbers, also negative ones, are version numbers)."""
    check_name(tag, "tag")
    if _NUMBER.fullmatch(tag):
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
        raise UsageError(f"invalid reference {shown(text)}: nothing after ':'")
    if _NUMBER.fullmatch(ref):
        return Ref(name, version=check_version(ref, f"reference {shown(text)}"))
    if any(c.isdigit() for c in ref) and not ref.isascii():
        raise UsageError(f"invalid reference {shown(text)}: write version numbers with the digits 0-9")
    check_name(ref, "tag")
    return Ref(name, tag=ref)


def check_version(digits: str, what: str) -> int:
    """The version number written as ``digits`` (ASCII, optionally with a minus sign), if in range."""
    stripped = digits.lstrip("-").lstrip("0")
    if digits.startswith("-") or not stripped:
        raise UsageError(f"invalid {what}: versions start at 1")
    if len(stripped) > len(str(MAX_VERSION)) or int(stripped) > MAX_VERSION:
        raise UsageError(f"invalid {what}: version numbers go up to {MAX_VERSION}")
    return int(stripped)


def parse_key_value(text: str, what: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE`` (used by --metadata and --label)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"invalid {what} {shown(text)}: expected KEY=VALUE")
    if not _good_key(key):
        raise UsageError(f"invalid {what} {shown(text)}: the KEY of KEY=VALUE must be non-empty, "
                         "without control characters")
    return key, value


def check_key(key: str, what: str) -> str:
    """A metadata or label key as given alone (``--delete KEY``)."""
    if not _good_key(key):
        raise UsageError(f"invalid {what} key {shown(key)}: expected a non-empty key without control characters")
    return key


def _good_key(key: str) -> bool:
    """Not empty or blank, no control characters (keys are shown one per line)."""
    return bool(key.strip()) and not any(ord(c) < 32 or ord(c) == 127 for c in key)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``90s``, ``30m``, ``1h30m``, ``7d``, ``2w`` or a bare number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value or not math.isfinite(seconds):
            raise UsageError(f"{what}: {shown(text)} is not a duration (e.g. 90s, 30m, 1h30m, 7d, 2w)") from None
    if seconds < 0:
        raise UsageError(f"{what}: {shown(text)} must not be negative")
    return seconds
