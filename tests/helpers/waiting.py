"""Polling until a condition holds, for tests that watch other processes or servers."""

from __future__ import annotations

import time


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    """``check()``'s first truthy result, polled every ``interval`` s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
