"""Retention policies: which versions of a dataset ``osmo dataset retain`` keeps, and why.

A version is kept when at least one rule keeps it (the rules add up, like restic's ``forget``):

- ``keep_last N``: the N newest live versions;
- ``keep_within SECONDS``: versions created less than that long ago (by the injected clock);
- ``keep_tagged``: versions some tag points at.

The newest live version is always kept (reason ``latest``): retention never empties a dataset;
``osmo dataset delete`` does that on purpose. Pure logic: no I/O, the clock is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from osmo_store.errors import UsageError


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int | None = None
    keep_within: float | None = None  # seconds
    keep_tagged: bool = False

    def validate(self) -> "RetentionPolicy":
        if self.keep_last is None and self.keep_within is None and not self.keep_tagged:
            raise UsageError("retain: give at least one rule (--keep-last, --keep-within or --keep-tagged)")
        if self.keep_last is not None and self.keep_last < 1:
            raise UsageError(f"--keep-last: expected a number >= 1, got {self.keep_last}")
        if self.keep_within is not None and self.keep_within <= 0:
            raise UsageError("--keep-within: expected a duration > 0")
        return self

    def describe(self) -> dict:
        return {"keep_last": self.keep_last, "keep_within_seconds": self.keep_within, "keep_tagged": self.keep_tagged}


def decide(policy: RetentionPolicy, versions: list[dict], tags: dict[str, int], now: float) -> dict[int, list[str]]:
    """Map every live version number to the reasons it is kept (an empty list: it goes).

    ``versions`` are live version records (``version``, ``created``) in any order; ``tags`` maps a
    tag to the version it points at.
    """
    tagged: dict[int, list[str]] = {}
    for tag, version in tags.items():
        tagged.setdefault(version, []).append(tag)
    newest_first = sorted(versions, key=lambda r: r["version"], reverse=True)
    reasons: dict[int, list[str]] = {}
    for rank, rec in enumerate(newest_first):
        why = []
        if rank == 0:
            why.append("latest")
        if policy.keep_last is not None and rank < policy.keep_last:
            why.append(f"last {policy.keep_last}")
        if policy.keep_within is not None and now - rec["created"] < policy.keep_within:
            why.append("within")
        if policy.keep_tagged and rec["version"] in tagged:
            why.append("tagged " + ",".join(sorted(tagged[rec["version"]])))
        reasons[rec["version"]] = why
    return reasons
