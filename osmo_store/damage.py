"""Which versions lost data, and which of their files: what ``dataset info``, ``store verify`` and
``store repair`` report about damage.

A version is *damaged* when a manifest node it needs cannot be read (missing, or failing its check)
or a chunk of one of its files has no copy that is known to be intact: not in any pack the store
still lists, or only in packs where it was found damaged. The walk goes on past an unreadable node,
so the files under the rest of the tree are still checked; the files under that node are unknown,
and the report says from which path on. Re-uploading the same data stores the lost chunks and nodes
again under the same ids, which heals every version that needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from osmo_store.chunkstore import ChunkStore
from osmo_store.errors import IntegrityError, NotFoundError, UnsafePathError
from osmo_store.manifest import LEAF, decode_node

MAX_NAMED_FILES = 20  # files named per damaged version (the count is always complete)


@dataclass
class VersionDamage:
    dataset: str
    version: int
    files: int = 0  # files with lost data
    named: list[str] = field(default_factory=list)  # the first of them, by path
    lost_chunks: int = 0
    unreadable: list[str] = field(default_factory=list)  # manifest nodes that cannot be read, and why

    @property
    def damaged(self) -> bool:
        return bool(self.files or self.unreadable)

    def summary(self) -> str:
        parts = []
        if self.files:
            more = f" and {self.files - len(self.named)} more" if self.files > len(self.named) else ""
            parts.append(f"{self.files} {'file' if self.files == 1 else 'files'} lost data "
                         f"({', '.join(self.named)}{more})")
        for problem in self.unreadable:
            parts.append(problem)
        return f"{self.dataset}:{self.version}: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "version": self.version, "files": self.files, "named": self.named,
                "lost_chunks": self.lost_chunks, "unreadable": self.unreadable}


class DamageFinder:
    """Checks versions against what is known to be intact; ``lost(chunk_id)`` decides for one chunk
    (the default asks the index: no location, or only bad ones)."""

    def __init__(self, chunks: ChunkStore, load: Callable[[bytes], bytes] | None = None,
                 lost: Callable[[bytes], bool] | None = None) -> None:
        self.chunks = chunks
        self.load = load or chunks.get_tree
        self._lost = lost
        self._known: dict[bytes, bool] = {}

    def lost(self, chunk_id: bytes) -> bool:
        found = self._known.get(chunk_id)
        if found is None:
            if self._lost is not None:
                found = self._lost(chunk_id)
            else:
                with self.chunks.index.read() as txn:
                    found = self.chunks.index.lost(chunk_id, txn)
            self._known[chunk_id] = found
        return found

    def version(self, dataset: str, record: dict) -> VersionDamage:
        """Walk one version's whole tree (past unreadable nodes) and note what it lost."""
        damage = VersionDamage(dataset, record["version"])
        stack: list[tuple[bytes, str]] = [(bytes.fromhex(record["root"]), "")]
        while stack:
            node_id, first_path = stack.pop()
            try:
                level, items = decode_node(node_id, self.load(node_id))
            except (NotFoundError, IntegrityError, UnsafePathError) as exc:
                where = f"the files from {first_path!r} on" if first_path else "all its files"
                damage.unreadable.append(f"manifest node {node_id.hex()[:16]} cannot be read ({exc}): "
                                         f"{where} under it are unknown")
                continue
            if level != LEAF:
                stack.extend((r.node_id, r.first_path) for r in reversed(items))
                continue
            for entry in items:
                lost = sum(1 for cid, _ in entry.chunks if self.lost(cid))
                if lost:
                    damage.files += 1
                    damage.lost_chunks += lost
                    if len(damage.named) < MAX_NAMED_FILES:
                        damage.named.append(entry.path)
        return damage

    def versions(self, versions: Iterable[tuple[str, dict]]) -> list[VersionDamage]:
        """The damaged ones among ``(dataset name, version record)`` pairs."""
        return [d for d in (self.version(name, rec) for name, rec in versions) if d.damaged]
