"""The schema of log events: every event read from the store is checked before it is folded.

An event that is not valid msgpack, lacks a field, has a field of the wrong type, or names a dataset
with an invalid name is an integrity error naming its key: a store whose log cannot be trusted is not
read further.
"""

from __future__ import annotations

import re

import msgpack

from osmo_store.errors import IntegrityError, UsageError
from osmo_store.ids import check_name

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _int(v) -> bool:
    return type(v) is int and v >= 0


def _str_map(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _version(v) -> bool:
    return type(v) is int and v >= 1


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
}
NO_DATASET = {"gc"}  # operations on the whole store rather than one dataset


def _pack_ids(v) -> bool:
    return isinstance(v, list) and all(isinstance(p, bytes) and len(p) == 32 for p in v)


def encode_event(event: dict) -> bytes:
    return msgpack.packb(event, use_bin_type=True)


def decode_event(key: str, data: bytes) -> dict:
    """Decode and validate one event; unknown operations are left to the fold (it asks to upgrade)."""
    try:
        event = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"event {key} is not valid msgpack ({exc})") from None
    if not isinstance(event, dict):
        raise IntegrityError(f"event {key} is malformed: not a map")
    common = {k: v for k, v in COMMON.items() if k != "dataset"} if event.get("op") in NO_DATASET else COMMON
    schema = {**common, **FIELDS.get(event.get("op"), {})}
    for field, valid in schema.items():
        if field not in event:
            raise IntegrityError(f"event {key} is malformed: field {field!r} is missing")
        if not valid(event[field]):
            raise IntegrityError(f"event {key} is malformed: field {field!r} is invalid")
    return event
