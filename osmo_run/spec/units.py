"""Value syntaxes of the spec: durations (``30s``, ``10m``, ``1h30m``) and resource quantities
(cpu ``2`` / ``500m``, memory and storage ``10Gi`` / ``512Mi`` / ``1G``).

The parse functions raise ``ValueError`` with a short reason; the parser turns that into a
``SpecError`` naming the field and line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_DURATION = re.compile(r"^(?:\d+[dhms])+$")


@dataclass(frozen=True)
class Duration:
    """A duration as written (``text``) and in whole ``seconds``."""

    text: str
    seconds: int

    def __str__(self) -> str:
        return self.text


def parse_duration(value: object) -> Duration:
    """Parse OSMO's ``<integer><unit>`` forms (units s, m, h, d), combined forms such as ``1h30m``
    (each unit at most once, largest first) and bare numbers of seconds. Must be positive."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 10m, 1h or 1h30m, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0 or value != int(value):
            raise ValueError(f"a duration in seconds must be a positive whole number, got {value!r}")
        return Duration(str(value), int(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, 10m, 1h or 1h30m, got {type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        seconds = int(text)
    else:
        compact = text.replace(" ", "").lower()
        if not _DURATION.match(compact):
            raise ValueError(f"bad duration {value!r}: use <number><unit> with units s, m, h, d "
                             "(e.g. 30s, 10m, 1h, 1d, 1h30m)")
        units = [unit for _, unit in _DURATION_PART.findall(compact)]
        order = "dhms"
        if len(set(units)) != len(units) or units != sorted(units, key=order.index):
            raise ValueError(f"bad duration {value!r}: give each unit once, largest first (e.g. 1h30m)")
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return Duration(text, seconds)


_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([KMGTPE]i|[kKMGTPE])?$")


def parse_bytes(value: object) -> int:
    """Parse a memory or storage quantity to bytes: ``512Mi``, ``10Gi`` (binary), ``1G``, ``500M``
    (decimal, as Kubernetes reads them) or a plain number of bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a quantity such as 512Mi, 10Gi or 1G, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a quantity must be a non-negative number, got {value!r}")
        return int(value)
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"bad quantity {value!r}: use a number with a unit such as 512Mi, 10Gi or 1G")
    number, unit = match.groups()
    factor = _BINARY.get(unit or "") or _DECIMAL.get(unit or "") or 1
    return int(round(float(number) * factor))


def parse_cpu(value: object) -> float:
    """Parse a cpu count: a number (``1``, ``0.5``, ``"2"``) or Kubernetes millicores (``500m``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a cpu count such as 1, 0.5 or 500m, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise ValueError(f"bad cpu count {value!r}: use a number such as 1, 0.5 or 500m") from None
    else:
        raise ValueError(f"expected a cpu count such as 1, 0.5 or 500m, got {type(value).__name__}")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"a cpu count must be a non-negative number, got {value!r}")
    return number


def parse_count(value: object) -> int:
    """Parse a whole, non-negative count (gpus)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if value < 0:
            raise ValueError(f"expected a non-negative whole number, got {value!r}")
        return int(value)
    raise ValueError(f"expected a whole number, got {value!r}")
