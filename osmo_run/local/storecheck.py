"""The submit-time store check: a workflow whose store is missing or cannot be written fails at
``submit``, before any task runs, with one line naming the store (exit code 5).

osmo_run never opens the store itself (the sidecar does all data work), so the check is the
sidecar's ``check-store`` command, run the way tasks will run it: the pool config's sidecar command,
the submitting environment (store credentials included), the user's umask.
"""

from __future__ import annotations

import subprocess

from osmo_run.local.errors import STORE_UNUSABLE, RunnerError
from osmo_run.local.settings import Settings

CHECK_TIMEOUT = 120.0  # seconds; an object store that does not answer fails the submit
SIDECAR_PREFIX = "[osmo-sidecar] "


def _last_line(output: str) -> str:
    lines = [line.removeprefix(SIDECAR_PREFIX).strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_store(settings: Settings, store: str | None) -> None:
    """Raise ``RunnerError`` (exit code 5) unless the sidecar can use ``store`` (None: the default)."""
    label = store if store is not None else "the default store"
    argv = [*settings.sidecar_argv, "check-store", *(["--store", store] if store is not None else [])]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RunnerError(f"store {label}: no answer within {CHECK_TIMEOUT:g} s", STORE_UNUSABLE) from None
    except OSError as exc:
        raise RunnerError(f"cannot run the sidecar ({argv[0]}) to check store {label}: {exc.strerror}",
                          STORE_UNUSABLE) from None
    if done.returncode != 0:
        why = _last_line(done.stdout + done.stderr) or f"the sidecar's check exited {done.returncode}"
        raise RunnerError(why if why.startswith("store ") else f"store {label}: {why}", STORE_UNUSABLE)
