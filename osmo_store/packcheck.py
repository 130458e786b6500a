"""Reading one pack whole and saying exactly what of it is intact.

``check_pack`` is what ``osmo store verify --read-data`` and ``osmo store repair`` do to every pack: the
pack's bytes against its name, its footer against its digest, and every chunk against its id. When the
footer cannot be read, the entries a client indexed earlier (``known``) stand in for it, so chunks of a
pack with a damaged tail can still be salvaged. Nothing is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osmo_store import hashing
from osmo_store.blob import BlobStore
from osmo_store.chunkcodec import decode_chunk
from osmo_store.errors import IntegrityError, NotFoundError
from osmo_store.packs import HEADER_SIZE, FooterTooShort, PackEntry, pack_id_from_key, parse_pack, parse_tail


@dataclass
class PackCheck:
    key: str
    pack_id: bytes | None = None  # None: the key is not a pack's name
    data: bytes | None = None  # the pack's bytes as read (None: gone, or not readable)
    entries: list[PackEntry] = field(default_factory=list)  # from the footer, else what was known
    footer_ok: bool = False
    bad: set[bytes] = field(default_factory=set)  # chunks whose stored bytes fail their check
    problems: list[str] = field(default_factory=list)
    gone: bool = False  # deleted meanwhile (garbage collection): nothing to check

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def good(self) -> list[PackEntry]:
        """The entries whose chunks read back intact."""
        return [e for e in self.entries if e.chunk_id not in self.bad]

    def stored(self, entry: PackEntry) -> bytes:
        return self.data[entry.offset:entry.offset + entry.stored_length]


def check_pack(blob: BlobStore, key: str, known: list[PackEntry] | None = None) -> PackCheck:
    """Read ``key`` whole and check it; transient failures of the store are raised, not reported."""
    check = PackCheck(key)
    try:
        check.pack_id = pack_id_from_key(key)
    except IntegrityError as exc:
        check.problems.append(str(exc))
        return check
    try:
        check.data = data = blob.get(key)
    except NotFoundError:
        check.gone = True
        return check
    reasons = []
    if hashing.digest(data) != check.pack_id:
        reasons.append("content does not match its name")
    try:
        check.entries = parse_pack(data, key)
        check.footer_ok = True
    except IntegrityError as exc:
        reasons.append(str(exc).replace(f"{key}: ", ""))
        try:
            check.entries = parse_tail(data, len(data), key)  # a damaged header: the footer may be fine
        except (IntegrityError, FooterTooShort):
            check.entries = list(known or [])
    view = memoryview(data)
    for e in check.entries:
        if e.offset < HEADER_SIZE or e.offset + e.stored_length > len(data):
            check.bad.add(e.chunk_id)
            continue
        try:
            decode_chunk(e.chunk_id, view[e.offset:e.offset + e.stored_length], e.raw_length, e.compression, key)
        except IntegrityError:
            check.bad.add(e.chunk_id)
    if check.bad:
        reasons.append(f"{len(check.bad)} of its {len(check.entries)} chunks fail their check")
    if reasons:
        check.problems.append(f"pack {key}: " + "; ".join(reasons))
    return check

