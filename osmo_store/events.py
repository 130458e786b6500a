"""The schema of log events: every event read from the store is checked before it is folded.

Events written by this version end with a ``check`` field: the hex BLAKE3 (128 bits) of the event's
canonical msgpack without it, so a flipped byte anywhere in an event is found. An event that is not
valid msgpack, fails its check, lacks a field, has a field of the wrong type, or names a dataset with
an invalid name is an integrity error naming its key. The log reader does not stop there: the event
is *damaged*, folded as nothing, and reported until ``osmo store repair`` quarantines it
(docs/FORMAT.md section 5), so one bad object never blocks the rest of the store.
"""

from __future__ import annotations

import re

import msgpack

from osmo_store import hashing
from osmo_store.errors import FormatVersionError, IntegrityError, UsageError
from osmo_store.ids import MAX_VERSION, check_name

HEX64 = re.compile(r"^[0-9a-f]{64}$")
CHECK = "check"


def _int(v) -> bool:
    return type(v) is int and v >= 0


def _str_map(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _version(v) -> bool:
    return type(v) is int and 1 <= v <= MAX_VERSION


def _seqs(v) -> bool:
    return isinstance(v, list) and all(type(x) is int and 1 <= x <= MAX_VERSION for x in v)


def _name(v) -> bool:
    try:
        return isinstance(v, str) and bool(check_name(v))
    except UsageError:
        return False


COMMON = {"op": lambda v: isinstance(v, str), "dataset": _name,
          "time": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "user": lambda v: isinstance(v, str)}

FIELDS = {
    "version": {"version": _version, "root": lambda v: isinstance(v, str) and bool(HEX64.match(v)),
                "parent": lambda v: v is None or _version(v), "description": lambda v: isinstance(v, str),
                "metadata": _str_map, "labels": _str_map, "tags": _str_list, "logical_bytes": _int,
                "files": _int, "stored_bytes": _int,
                "checksum": lambda v: isinstance(v, str) and bool(HEX64.match(v))},
    "tag": {"tag": _name, "version": _version},
    "untag": {"tag": _name},
    "label": {"set": _str_map, "unset": _str_list},
    "metadata": {"version": _version, "set": _str_map, "unset": _str_list},
    "delete": {"version": _version},
    "delete_versions": {"versions": lambda v: isinstance(v, list) and bool(v) and all(_version(x) for x in v)},
    "delete_dataset": {},
    "rename": {"new": _name},
    "gc": {"condemn": lambda v: _pack_ids(v), "sweep": lambda v: _pack_ids(v)},
    "repair": {"events": _seqs, "packs": lambda v: _pack_ids(v)},
    "quarantined": {"reason": lambda v: isinstance(v, str), "key": lambda v: isinstance(v, str)},
}
NO_DATASET = {"gc", "repair", "quarantined"}  # operations on the whole store rather than one dataset


def _pack_ids(v) -> bool:
    return isinstance(v, list) and all(isinstance(p, bytes) and len(p) == 32 for p in v)


def _check(event: dict) -> str:
    return hashing.digest(msgpack.packb(event, use_bin_type=True))[:16].hex()


def encode_event(event: dict) -> bytes:
    """The event's bytes, its ``check`` field last (computed over everything before it)."""
    body = {k: v for k, v in event.items() if k != CHECK}
    return msgpack.packb({**body, CHECK: _check(body)}, use_bin_type=True)


def decode_event(key: str, data: bytes) -> dict:
    """Decode and validate one event (``IntegrityError`` naming ``key`` if it is damaged).

    An unknown operation in an event with a valid check was written by a newer osmo:
    ``FormatVersionError``. Events written before checks existed carry none; an unknown operation
    there can only be damage."""
    try:
        event = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"event {key} is not valid msgpack ({exc})") from None
    if not isinstance(event, dict):
        raise IntegrityError(f"event {key} is malformed: not a map")
    checked = CHECK in event
    if checked:
        body = {k: v for k, v in event.items() if k != CHECK}
        try:
            valid = event[CHECK] == _check(body)
        except Exception:  # a body that does not encode again (e.g. a map key of an odd type)
            valid = False
        if not valid:
            raise IntegrityError(f"event {key} is damaged: its check does not match its content")
        event = body
    if event.get("op") not in FIELDS:
        if checked and isinstance(event.get("op"), str):
            raise FormatVersionError(f"event {key} has unknown operation {event.get('op')!r}; upgrade osmo")
        raise IntegrityError(f"event {key} is malformed: unknown operation {event.get('op')!r}")
    common = {k: v for k, v in COMMON.items() if k != "dataset"} if event.get("op") in NO_DATASET else COMMON
    schema = {**common, **FIELDS.get(event.get("op"), {})}
    for field, valid in schema.items():
        if field not in event:
            raise IntegrityError(f"event {key} is malformed: field {field!r} is missing")
        if not valid(event[field]):
            raise IntegrityError(f"event {key} is malformed: field {field!r} is invalid")
    return event
