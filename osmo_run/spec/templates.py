"""Jinja templates of a spec, rendered as OSMO renders them: on the YAML text, before parsing.

1. ``default-values`` is read from the raw text first (its top-level section, parsed as YAML alone:
   the rest of the file may not be YAML until it is rendered);
2. ``--set k=v`` values (numbers and true/false coerced) and ``--set-string k=v`` values (kept as text)
   override them;
3. the text is rendered in a ``SandboxedEnvironment`` with ``StrictUndefined``: an undefined variable
   is a ``SpecError`` naming it and its line. The special tokens (``{{output}}``, ``{{input:N}}``,
   ``{{host:TASK}}``, ...) are shielded and come out unchanged; the ``default-values`` section itself
   is not rendered. Rendering is bounded in time, size and memory (``sandbox.py``): a template past a
   limit is a ``SpecError`` naming the limit and the line, within seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from osmo_run.spec.errors import SpecError
from osmo_run.spec.tokens import shield, unshield

_SECTION = re.compile(r"^([A-Za-z][\w-]*)[ \t]*:(?:\s|$)")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
DEFAULTS_KEY = "default-values"


@dataclass(frozen=True)
class RenderedSpec:
    """The rendered text (tokens intact, ``default-values`` as written) and the values used.
    ``same_lines`` is False when Jinja blocks changed the line count, so lines of later errors refer
    to the rendered text, not to the file."""

    text: str
    values: dict[str, Any] = field(default_factory=dict)
    default_values: dict[str, Any] = field(default_factory=dict)
    same_lines: bool = True


def coerce_value(text: str) -> Any:
    """``--set`` coercion: ``3`` -> 3, ``0.5`` -> 0.5, ``true``/``false`` -> bool, else the text."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_set_options(set_items: Iterable[str] = (), set_string_items: Iterable[str] = ()) -> dict[str, Any]:
    """``["k=v", ...]`` of ``--set`` (coerced) then ``--set-string`` (text); later ones win."""
    values: dict[str, Any] = {}
    for option, items, coerce in (("--set", set_items, True), ("--set-string", set_string_items, False)):
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not _KEY.match(key):
                raise SpecError(f"{option} {item!r}: expected NAME=VALUE with NAME made of letters, digits "
                                "and '_'")
            values[key] = coerce_value(value) if coerce else value
    return values


@dataclass(frozen=True)
class Section:
    """A top-level key of the raw text and its lines [start, end) (0-based, end exclusive)."""

    key: str
    start: int
    end: int


def split_sections(text: str) -> list[Section]:
    """Top-level ``key:`` lines of the raw text (Jinja need not be rendered to find them)."""
    lines = text.splitlines(keepends=True)
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _SECTION.match(line))]
    return [Section(key, start, starts[n + 1][0] if n + 1 < len(starts) else len(lines))
            for n, (start, key) in enumerate(starts)]


def read_default_values(text: str, *, file: str | None = None) -> dict[str, Any]:
    """The ``default-values`` mapping of the raw text, or {} when there is none."""
    sections = [s for s in split_sections(text) if s.key == DEFAULTS_KEY]
    if not sections:
        return {}
    if len(sections) > 1:
        raise SpecError(f"'{DEFAULTS_KEY}' is given twice (first on line {sections[0].start + 1})",
                        file=file, line=sections[1].start + 1, path=DEFAULTS_KEY)
    section = sections[0]
    body = "".join(text.splitlines(keepends=True)[section.start:section.end])
    try:
        loaded = yaml.safe_load(body) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecError(f"invalid YAML: {exc.problem}", file=file, path=DEFAULTS_KEY,
                        line=section.start + mark.line + 1 if mark else section.start + 1) from None
    values = loaded.get(DEFAULTS_KEY) if isinstance(loaded, dict) else None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise SpecError("expected a mapping of template values", file=file, line=section.start + 1,
                        path=DEFAULTS_KEY)
    return values


def _protect_defaults(text: str) -> str:
    """Wrap the default-values section in a raw block without adding lines."""
    lines = text.splitlines(keepends=True)
    for section in split_sections(text):
        if section.key != DEFAULTS_KEY:
            continue
        last = section.end - 1
        lines[section.start] = "{% raw %}" + lines[section.start]
        body = lines[last].rstrip("\r\n")
        lines[last] = body + "{% endraw %}" + lines[last][len(body):]
    return "".join(lines)


def render_template(text: str, values: Mapping[str, Any], *, file: str | None = None) -> str:
    """Render ``text`` with ``values`` in the sandbox; tokens survive unchanged. (Jinja is imported here:
    the commands that only read a workflow's state start without it.)"""
    import jinja2
    from jinja2.sandbox import SecurityError

    from osmo_run.spec.sandbox import LimitedEnvironment, RenderLimit, template_line

    shielded, saved = shield(_protect_defaults(text))
    env = LimitedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        rendered = env.render_limited(shielded, dict(values))
    except jinja2.TemplateSyntaxError as exc:
        hint = " ('{#' starts a Jinja comment; write {{ '{#' }} for a literal one)" \
            if "comment" in str(exc.message) else ""
        raise SpecError(f"template syntax error: {exc.message}{hint}", file=file, line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        match = re.search(r"'([^']+)' is undefined", str(exc.message))
        if match:
            name = match.group(1)
            message = (f"undefined template variable {name!r} (give it with --set {name}=VALUE or in "
                       "default-values)")
        else:
            message = f"template error: {exc.message}"
        raise SpecError(message, file=file, line=template_line(exc)) from None
    except RenderLimit as exc:
        raise SpecError(f"template exceeds a limit: {exc}", file=file, line=template_line(exc)) from None
    except SecurityError as exc:
        raise SpecError(f"template tried an unsafe operation: {exc}", file=file,
                        line=template_line(exc)) from None
    except jinja2.TemplateError as exc:
        raise SpecError(f"template error: {exc}", file=file, line=template_line(exc)) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise SpecError(f"template error: {type(exc).__name__}: {exc}", file=file,
                        line=template_line(exc)) from None
    return unshield(rendered, saved)


def render_spec(text: str, *, file: str | None = None, overrides: Mapping[str, Any] | None = None,
                set_items: Iterable[str] = (), set_string_items: Iterable[str] = ()) -> RenderedSpec:
    """Read default-values, apply ``overrides`` and the ``--set``/``--set-string`` items, render."""
    defaults = read_default_values(text, file=file)
    values = dict(defaults)
    values.update(overrides or {})
    values.update(parse_set_options(set_items, set_string_items))
    rendered = render_template(text, values, file=file)
    return RenderedSpec(rendered, values, defaults, rendered.count("\n") == text.count("\n"))
