"""A small disk for full-disk tests: a tmpfs mounted for the duration of a ``with`` block (needs root)."""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from helpers.tools import require_tool


@contextlib.contextmanager
def tmpfs(path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (needs root); fails the test with the reason if refused."""
    path.mkdir()
    proc = subprocess.run([require_tool("mount"), "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk test (needs root with CAP_SYS_ADMIN): "
                    f"{proc.stderr.strip()}", pytrace=False)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
