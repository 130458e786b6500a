"""Run ``Repository.upload`` through the library with a chunker that raises after N chunks.

Usage: python failing_upload.py STORE DATASET FOLDER N

The store is opened like the CLI does (cache from $OSMO_CACHE_DIR). Exits 42 after printing
``injected: ...`` when the injected failure propagated out of ``upload`` as expected, 0 if the upload
unexpectedly succeeded; anything else escapes with a traceback.
"""

from __future__ import annotations

import sys
import threading

from osmo_store.chunking import Chunker
from osmo_store.repository import Repository
from osmo_store.transfer.upload import UploadRequest


class InjectedFailure(RuntimeError):
    pass


def main() -> int:
    store, dataset, folder, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    real_blocks = Chunker.blocks
    lock = threading.Lock()
    seen = [0]

    def failing_blocks(self, f):
        for block, views in real_blocks(self, f):
            with lock:
                seen[0] += len(views)
                count = seen[0]
            if count > limit:
                raise InjectedFailure(f"injected failure after {limit} chunks")
            yield block, views

    Chunker.blocks = failing_blocks
    repo = Repository.open(store)
    try:
        repo.upload(UploadRequest(dataset, [folder]))
    except InjectedFailure as exc:
        print(f"injected: {exc}")
        return 42
    finally:
        repo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
