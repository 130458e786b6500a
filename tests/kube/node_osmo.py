"""``Osmo`` (tests/run/conftest.py) for the tests on the real node: the same CLI driver, waiting with a
slower poll. Each ``query`` is a Python process; while a dozen workflows run on a two-core node, a
poll every 0.3 s would take CPU from the pods being waited for."""

from __future__ import annotations

from helpers.waiting import wait_for
from run.conftest import TERMINAL, Osmo

POLL = 1.0


class NodeOsmo(Osmo):
    def wait(self, workflow_id: str, timeout: float = 240) -> dict:
        def ended() -> dict | None:
            info = self.query(workflow_id)
            return info if info["status"] in TERMINAL else None

        return wait_for(ended, timeout, f"workflow {workflow_id} to end", interval=POLL)
