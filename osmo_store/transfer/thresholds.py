"""When a transfer goes to worker processes: the size thresholds and the environment variables that
move them. Kept apart from ``workerprocs.py`` so that reading them costs no import of the process
machinery: every upload and download reads them, most never start a worker."""

from __future__ import annotations

import os

from osmo_store.errors import UsageError

PROCESS_MIN_BYTES = 64 * 1024 * 1024  # smaller transfers stay on threads: starting processes costs ~0.2 s
UPLOAD_VARIABLE = "OSMO_UPLOAD_PROCESS_MIN_BYTES"  # the upload threshold, 64 MiB unless set (0: always)
DOWNLOAD_VARIABLE = "OSMO_DOWNLOAD_PROCESS_MIN_BYTES"  # the download threshold, likewise


def process_min_bytes(variable: str, default: int = PROCESS_MIN_BYTES) -> int:
    """From how many bytes a transfer uses worker processes (starting them costs ~0.2 s): ``default``,
    or the environment's ``variable`` (0: always)."""
    value = os.environ.get(variable)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
        if number < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"{variable}={value!r}: give a number of bytes (0 or more)") from None
    return number
