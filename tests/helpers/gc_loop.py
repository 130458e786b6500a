"""Run garbage collection again and again until STOPFILE exists; one JSON line of statistics per run.

Usage: python gc_loop.py STORE MIN_AGE_SECONDS STOPFILE
"""

from __future__ import annotations

import json
import os
import sys

from osmo_store.gc import GcOptions
from osmo_store.repository import Repository


def main() -> int:
    store, min_age, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    with Repository.open(store) as repo:
        while not os.path.exists(stop):
            stats = repo.gc(GcOptions(min_age=min_age, repack_threshold=0.3))
            print(json.dumps(stats.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
