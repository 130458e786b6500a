"""YAML nodes that know where they are: the parser reads the spec through ``Node`` so that every value
carries its line and its field path (``workflow.groups[1].tasks[0].inputs[0].task``) for errors.

Built on PyYAML's compose API (``yaml.compose`` with the safe loader): nodes keep their marks, values
are constructed one scalar at a time, duplicate keys are an error (PyYAML would keep the last one
silently) and ``<<`` merge keys work as in the safe loader.
"""

from __future__ import annotations

from typing import Any, Iterator

import yaml
from yaml.constructor import SafeConstructor

from osmo_run.spec.errors import SpecError

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"


def compose(text: str, file: str | None) -> "Node | None":
    """Compose one YAML document; ``None`` for an empty one. Syntax errors become ``SpecError``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise SpecError(f"invalid YAML: {problem}", file=file,
                        line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    return None if root is None else Node(root, "", file)


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing (null)"
    return f"{node.tag.rsplit(':', 1)[-1]} {node.value!r}"


class Node:
    """One YAML node with its field ``path`` and 1-based ``line``."""

    def __init__(self, node: yaml.Node, path: str, file: str | None) -> None:
        self.node = node
        self.path = path
        self.file = file

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    def error(self, message: str, *, path: str | None = None, line: int | None = None) -> SpecError:
        return SpecError(message, file=self.file, line=line or self.line,
                         path=self.path if path is None else path)

    def child(self, node: yaml.Node, suffix: str) -> "Node":
        return Node(node, f"{self.path}{suffix}" if self.path else suffix.lstrip("."), self.file)

    # -- kinds ---------------------------------------------------------------------------------
    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    @property
    def is_scalar(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode)

    # -- containers ----------------------------------------------------------------------------
    def items(self) -> Iterator[tuple[str, "Node", "Node"]]:
        """(key, key node, value node) of a mapping, in order; null is an empty mapping."""
        if self.is_null:
            return
        if not self.is_mapping:
            raise self.error(f"expected a mapping, got {_describe(self.node)}")
        SafeConstructor().flatten_mapping(self.node)
        seen: dict[str, int] = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL:
                raise self.error(f"expected a text key, got {_describe(key_node)}",
                                 line=key_node.start_mark.line + 1)
            key = key_node.value
            key_wrapper = self.child(key_node, f".{key}")
            if key in seen:
                raise key_wrapper.error(f"duplicate key {key!r} (first given on line {seen[key]})")
            seen[key] = key_wrapper.line
            yield key, key_wrapper, self.child(value_node, f".{key}")

    def fields(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, "Node"]:
        """The fields of a mapping as value nodes; unknown and missing fields are errors."""
        found: dict[str, Node] = {}
        for key, key_node, value in self.items():
            if key not in allowed:
                raise key_node.error(f"unknown field {key!r} (known fields: {', '.join(allowed)})")
            found[key] = value
        for key in required:
            if key not in found:
                raise self.error(f"missing required field {key!r}")
        return found

    def elements(self) -> list["Node"]:
        """The elements of a list; null is an empty list."""
        if self.is_null:
            return []
        if not self.is_sequence:
            raise self.error(f"expected a list, got {_describe(self.node)}")
        return [self.child(item, f"[{i}]") for i, item in enumerate(self.node.value)]

    # -- scalars -------------------------------------------------------------------------------
    def value(self) -> Any:
        """The plain Python value of this node (scalars resolved as the safe loader does)."""
        constructor = SafeConstructor()
        try:
            return constructor.construct_object(self.node, deep=True)
        except yaml.YAMLError as exc:
            raise self.error(f"bad value: {exc}") from None

    def text(self) -> str:
        """A scalar as text, exactly as written (``22.10`` stays ``22.10``); null or containers fail."""
        if not self.is_scalar or self.is_null:
            raise self.error(f"expected text, got {_describe(self.node)}")
        return self.node.value

    def optional_text(self) -> str | None:
        return None if self.is_null else self.text()

    def boolean(self) -> bool:
        if not self.is_scalar or self.node.tag != _BOOL:
            raise self.error(f"expected true or false, got {_describe(self.node)}")
        return bool(self.value())

    def scalar(self) -> Any:
        """A scalar's constructed value (int, float, str, bool); containers and null fail."""
        if not self.is_scalar or self.is_null:
            raise self.error(f"expected a value, got {_describe(self.node)}")
        return self.value()

    def text_list(self) -> tuple[str, ...]:
        return tuple(item.text() for item in self.elements())

    def text_map(self) -> dict[str, str]:
        return {key: value.text() for key, _, value in self.items()}

    def line_of(self, index: int) -> int:
        """The line of character ``index`` of this scalar's value (block scalars start a line below)."""
        node = self.node
        before = node.value[:index].count("\n") if isinstance(node.value, str) else 0
        block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
        return self.line + (1 if block else 0) + before
