"""``Osmo`` (tests/run/conftest.py) for the tests on the real node: the same CLI driver, waiting as it does
(the status read from the state database in this process) for a workflow this machine supervises, and
with ``query`` once a second for one the cluster supervises (its record is the cluster's). Each
``query`` is a Python process; while workflows run on a two-core node, polling with one every 0.3 s
would take CPU from the pods being waited for."""

from __future__ import annotations

from helpers.waiting import wait_for
from run.conftest import TERMINAL, Osmo

POLL = 1.0


class NodeOsmo(Osmo):
    supervised_here = False  # the pool config's kubernetes section says supervisor: local

    def pool(self, **settings) -> None:
        super().pool(**settings)
        self.supervised_here = (settings.get("kubernetes") or {}).get("supervisor", "cluster") == "local"

    def wait(self, workflow_id: str, timeout: float = 240) -> dict:
        if self.supervised_here:
            return super().wait(workflow_id, timeout)

        def ended() -> dict | None:
            info = self.query(workflow_id)
            return info if info["status"] in TERMINAL else None

        return wait_for(ended, timeout, f"workflow {workflow_id} to end", interval=POLL)
