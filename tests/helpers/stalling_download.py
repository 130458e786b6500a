"""Run the ``osmo`` CLI with a download that stalls inside its temporary files.

Usage: python stalling_download.py OSMO-ARGS...

Every temporary file the download creates gets its first bytes written as usual; then the writer
prints ``stalled`` on stdout and blocks forever with the file open and locked, exactly as a download
busy writing it would be. A test kills -9 the process at that known point: temporary files on disk,
their files not yet in place.
"""

from __future__ import annotations

import os
import sys
import time

from osmo_store.cli.main import cli
from osmo_store.transfer import filewrite


def main() -> None:
    real_create = filewrite.create_part

    def stalling_create(folder: str, target: str) -> tuple[int, str]:
        fd, tmp = real_create(folder, target)
        os.write(fd, b"partial content of " + os.fsencode(target))
        os.write(1, b"stalled\n")  # straight to the pipe, whatever the CLI did to sys.stdout
        while True:
            time.sleep(60)

    filewrite.create_part = stalling_create
    os.environ["OSMO_DOWNLOAD_PROCESS_MIN_BYTES"] = str(2**62)  # threads: the patch does not reach worker processes
    cli(args=sys.argv[1:], prog_name="osmo")


if __name__ == "__main__":
    main()
