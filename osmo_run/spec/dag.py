"""The group DAG of a workflow: groups in spec order, each group's upstream groups (from task inputs
that name a task of this workflow; ``WORKFLOW_ID:TASK`` inputs are outside it) and what lies downstream.

Validation guarantees every upstream group is listed before its readers, so spec order is a
topological order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from osmo_run.spec.models import Group, Workflow

GroupRef = Union[Group, str]


def _name(group: GroupRef) -> str:
    return group if isinstance(group, str) else group.name


@dataclass(frozen=True)
class Dag:
    order: tuple[str, ...]
    upstream: dict[str, tuple[str, ...]]

    @classmethod
    def from_workflow(cls, workflow: Workflow) -> "Dag":
        group_of = {t.name: g.name for g in workflow.groups for t in g.tasks}
        order = tuple(g.name for g in workflow.groups)
        upstream: dict[str, tuple[str, ...]] = {}
        for group in workflow.groups:
            found = {group_of[ref] for t in group.tasks for ref in t.upstream_tasks() if ref in group_of}
            found.discard(group.name)
            upstream[group.name] = tuple(n for n in order if n in found)
        return cls(order, upstream)

    def upstream_of(self, group: GroupRef) -> tuple[str, ...]:
        """The groups this group reads from directly, in spec order."""
        return self.upstream[_name(group)]

    def children_of(self, group: GroupRef) -> tuple[str, ...]:
        """The groups that read this group directly, in spec order."""
        name = _name(group)
        return tuple(n for n in self.order if name in self.upstream[n])

    def downstream_of(self, group: GroupRef) -> tuple[str, ...]:
        """Every group that reads this group directly or through others, in spec order."""
        reached = {_name(group)}
        for name in self.order:  # spec order is topological
            if any(u in reached for u in self.upstream[name]):
                reached.add(name)
        reached.discard(_name(group))
        return tuple(n for n in self.order if n in reached)

    def ready(self, done: Iterable[str], started: Iterable[str] = ()) -> tuple[str, ...]:
        """Groups not yet started whose upstream groups are all in ``done``."""
        done_set, started_set = set(done), set(started) | set(done)
        return tuple(n for n in self.order
                     if n not in started_set and all(u in done_set for u in self.upstream[n]))
