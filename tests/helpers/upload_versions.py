"""One of several concurrent writers: upload COUNT versions of one dataset, each with content
unique to (WRITER, i), and print one JSON line per committed version.

Usage: python upload_versions.py STORE DATASET WRITER COUNT WORKDIR

The store is opened like the CLI does (config and credentials from the environment, cache from
$OSMO_CACHE_DIR). ``version_content`` regenerates what a version must contain, for checking.
"""

from __future__ import annotations

import json
import os
import sys

from osmo_store.repository import Repository
from osmo_store.transfer.upload import UploadRequest


def version_content(writer: int, i: int) -> dict[str, bytes]:
    shared = bytes(range(256)) * 40  # the same in every version: deduplicated
    unique = f"writer {writer} version {i}\n".encode() * (50 + writer * 7 + i)
    return {"shared.bin": shared, f"w{writer}/v{i}.txt": unique, "who.txt": f"{writer}:{i}".encode()}


def main() -> int:
    store, dataset, writer, count, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with Repository.open(store) as repo:
        for i in range(count):
            folder = os.path.join(workdir, f"w{writer}-v{i}")
            for rel, data in version_content(writer, i).items():
                path = os.path.join(folder, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            result = repo.upload(UploadRequest(dataset, [folder]))
            print(json.dumps({"writer": writer, "i": i, "version": result.version}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
