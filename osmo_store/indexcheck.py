"""``python -m osmo_store.indexcheck PATH``: read every row of a local index and check it.

Run by ``indexguard`` in a separate process, because LMDB may abort the process that reads a damaged
page. Exit code 0: intact; 1: damaged (the reason on stdout); death by a signal: damaged too.
"""

from __future__ import annotations

import sys

from osmo_store.errors import OsmoError
from osmo_store.index import LocalIndex


def main(path: str) -> int:
    try:
        index = LocalIndex(path, guard=False)
        try:
            index.validate()
        finally:
            index.close()
    except OsmoError as exc:
        print(exc)
        return 1
    except Exception as exc:  # any failure to read it means it cannot be trusted
        print(f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
