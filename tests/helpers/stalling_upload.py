"""Run the ``osmo`` CLI with remote pack writes that stall after N packs have landed.

Usage: python stalling_upload.py N OSMO-ARGS...

Every pack written through an fsspec store (S3, Azure) counts; once N have landed, the next pack
write prints ``stalled`` on stdout and blocks forever instead of writing, so a test can kill -9 the
process at a known point in the middle of an upload: packs stored, no version committed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from osmo_store.blob.fsspec_store import FsspecBlobStore
from osmo_store.cli.main import cli
from osmo_store.packs import PACK_PREFIX


def main() -> None:
    limit, args = int(sys.argv[1]), sys.argv[2:]
    real_put = FsspecBlobStore.put
    lock = threading.Lock()
    landed = [0]

    def stalling_put(self, key: str, data: bytes) -> None:
        if key.startswith(PACK_PREFIX):
            with lock:
                stall = landed[0] >= limit
            if stall:
                os.write(1, b"stalled\n")  # straight to the pipe, whatever the CLI did to sys.stdout
                while True:
                    time.sleep(60)
        real_put(self, key, data)
        if key.startswith(PACK_PREFIX):
            with lock:
                landed[0] += 1

    FsspecBlobStore.put = stalling_put
    cli(args=args, prog_name="osmo")


if __name__ == "__main__":
    main()
