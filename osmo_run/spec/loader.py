"""From a spec file to a validated ``Workflow``: render the templates, parse, check across.

``load_file`` / ``load_text`` return a ``LoadedSpec`` (the rendered text and the workflow). Errors are
``SpecError``s naming the file; when Jinja blocks changed the line count, the file is named
``FILE (rendered)`` because lines then refer to the rendered text (``submit --dry-run`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from osmo_run.spec.errors import SpecError
from osmo_run.spec.models import Workflow
from osmo_run.spec.parser import parse_workflow
from osmo_run.spec.templates import RenderedSpec, render_spec
from osmo_run.spec.validate import validate


@dataclass(frozen=True)
class LoadedSpec:
    rendered: RenderedSpec
    workflow: Workflow


def load_rendered(text: str, *, file: str | None = None) -> Workflow:
    """Parse and validate text whose templates are already rendered (e.g. a stored spec)."""
    return validate(parse_workflow(text, file=file))


def load_text(text: str, *, file: str | None = None, overrides: Mapping[str, Any] | None = None,
              set_items: Iterable[str] = (), set_string_items: Iterable[str] = ()) -> LoadedSpec:
    rendered = render_spec(text, file=file, overrides=overrides, set_items=set_items,
                           set_string_items=set_string_items)
    label = file if rendered.same_lines or not file else f"{file} (rendered)"
    return LoadedSpec(rendered, load_rendered(rendered.text, file=label))


def load_file(path: str | Path, *, overrides: Mapping[str, Any] | None = None,
              set_items: Iterable[str] = (), set_string_items: Iterable[str] = ()) -> LoadedSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec: {getattr(exc, 'strerror', None) or exc}",
                        file=str(path)) from None
    return load_text(text, file=str(path), overrides=overrides, set_items=set_items,
                     set_string_items=set_string_items)
