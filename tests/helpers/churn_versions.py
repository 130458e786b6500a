"""One of several writers racing garbage collection: upload COUNT versions of DATASET whose contents
cycle through three variants (so data of deleted versions comes back), deleting each of its own
versions two uploads later. Prints one JSON line per committed version and per deletion.

Usage: python churn_versions.py STORE DATASET WRITER COUNT WORKDIR [PAUSE_SECONDS]

An upload that fails because the collector swept data it referenced (possible only with a very short
--min-age) is retried and reported as ``{"retried": ...}``; nothing else is tolerated.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from osmo_store.errors import NotFoundError
from osmo_store.ids import Ref
from osmo_store.repository import Repository
from osmo_store.transfer.upload import UploadRequest


def variant_content(writer: int, variant: int, i: int) -> dict[str, bytes]:
    """A version's files: shared by all, one of three variants (comes back after deletion), and a
    file of its own (garbage once the version is deleted)."""
    shared = bytes(range(256)) * 30
    body = bytes((writer * 31 + variant * 7 + k) % 251 for k in range(6000 + 1500 * variant))
    own = random.Random(writer * 1000 + i).randbytes(3000)
    return {"shared.bin": shared, f"w{writer}/variant.bin": body, "who.txt": f"{writer}:{variant}".encode(),
            "own.bin": own}


def main() -> int:
    store, dataset, writer, count, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    mine: list[int] = []
    with Repository.open(store) as repo:
        for i in range(count):
            variant = i % 3
            folder = os.path.join(workdir, f"w{writer}-{i}")
            for rel, data in variant_content(writer, variant, i).items():
                path = os.path.join(folder, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            for attempt in range(5):
                try:
                    result = repo.upload(UploadRequest(dataset, [folder]))
                    break
                except NotFoundError as exc:
                    if "garbage-collected" not in str(exc):
                        raise
                    print(json.dumps({"retried": str(exc)}), flush=True)
            else:
                raise SystemExit("gave up after 5 uploads raced the collector")
            mine.append(result.version)
            print(json.dumps({"writer": writer, "variant": variant, "i": i, "version": result.version}), flush=True)
            if len(mine) > 2:
                gone = mine.pop(0)
                repo.log.delete_version(Ref(dataset, version=gone))
                print(json.dumps({"deleted": gone}), flush=True)
            time.sleep(pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
