"""Templates: default-values read from the raw text, --set / --set-string values, the Jinja sandbox,
undefined variables, and OSMO's special tokens shielded from Jinja and substituted per task."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from osmo_run.spec import (SpecError, coerce_value, find_tokens, load_file, load_text, parse_set_options,
                           render_spec, substitute_task, substitute_tokens)
from osmo_run.spec.templates import read_default_values, render_template

DATA = Path(__file__).resolve().parent.parent / "data" / "osmo-workflows"


def spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# -- token shielding ------------------------------------------------------------------------------------

def test_tokens_survive_jinja_and_neighbouring_expressions_render():
    text = ("run: {{output}}/{{ name }}-{{input:0}} {{ input:train }} {{host:server}}:{{ port + 1 }} "
            "{{workflow_id}} {{  output  }}\n")
    rendered = render_template(text, {"name": "x", "port": 8079})
    assert rendered == ("run: {{output}}/x-{{input:0}} {{ input:train }} {{host:server}}:8080 "
                        "{{workflow_id}} {{  output  }}\n")


def test_tokens_inside_jinja_string_literals_and_loops_survive():
    text = '{% for i in range(2) %}{{ "{{input:" ~ i ~ "}}" if false else "{{output}}" }}/{{ i }} {% endfor %}'
    assert render_template(text, {}) == "{{output}}/0 {{output}}/1 "


def test_conformance_tokens_are_unchanged_after_rendering():
    source = (DATA / "robot_simulation.yaml").read_text()
    rendered = render_spec(source).text
    for token in ("{{host:physics-sim}}", "{{host:robot-ctrl}}", "{{host:model-training}}"):
        assert rendered.count(token) == source.count(token) > 0
    assert "{{initial_policy}}" not in rendered and "policy=8 &&" in rendered
    serial = (DATA / "serial_workflow.yaml").read_text()
    assert render_spec(serial).text == serial  # nothing but tokens: the text is unchanged


def test_find_tokens_kinds():
    found = find_tokens("{{output}} {{ input:2 }} {{input:prep}} {{host:a-b}} {{workflow_id}} {{other}}")
    assert [(t.kind, t.arg, t.index) for t in found] == [
        ("output", None, None), ("input", "2", 2), ("input", "prep", None), ("host", "a-b", None),
        ("workflow_id", None, None)]
    assert found[1].canonical == "{{input:2}}"


# -- default-values and --set ---------------------------------------------------------------------------

def test_default_values_read_from_raw_text_that_is_not_yaml_yet():
    text = (DATA / "template_hello_world.yaml").read_text()
    assert read_default_values(text) == {"workflow_name": "hello-osmo", "ubuntu_version": 22.04,
                                         "message": "Hello from OSMO!"}
    assert read_default_values("workflow:\n  name: x\n") == {}


def test_set_overrides_default_values():
    loaded = load_file(DATA / "template_hello_world.yaml",
                       set_items=["workflow_name=greetings", "ubuntu_version=24.04", "message=Custom message!"])
    task = loaded.workflow.task("hello")
    assert loaded.workflow.name == "greetings"
    assert task.image == "ubuntu:24.04" and task.args == ("Custom message!",)
    assert loaded.rendered.default_values["workflow_name"] == "hello-osmo"
    assert loaded.rendered.values["workflow_name"] == "greetings"


@pytest.mark.parametrize("text,value", [
    ("3", 3), ("-7", -7), ("0.5", 0.5), ("1e3", 1000.0), ("true", True), ("False", False),
    ("22.04", 22.04), ("abc", "abc"), ("s3://b", "s3://b"), ("", "")])
def test_set_coercion(text, value):
    coerced = coerce_value(text)
    assert coerced == value and type(coerced) is type(value)


def test_set_string_keeps_text_and_wins_over_set():
    assert parse_set_options(["n=3", "v=22.10"], ["s=3"]) == {"n": 3, "v": 22.1, "s": "3"}
    assert parse_set_options(["n=3"], ["n=3"]) == {"n": "3"}
    assert parse_set_options(["eq=a=b"]) == {"eq": "a=b"}
    for bad in (["novalue"], ["bad key=1"], ["=1"]):
        with pytest.raises(SpecError):
            parse_set_options(bad)


def test_coercion_changes_what_templates_compute():
    text = spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [echo, "{{ n + 1 }}", "{{ 'big' if n > 2 else 'small' }}"]
        default-values:
          n: 1
        """)
    assert load_text(text).workflow.task("a").command == ("echo", "2", "small")
    assert load_text(text, set_items=["n=3"]).workflow.task("a").command == ("echo", "4", "big")
    with pytest.raises(SpecError) as caught:
        load_text(text, set_string_items=["n=3"], file="w.yaml")
    assert caught.value.line == 6 and "template error" in caught.value.message


def test_set_string_keeps_spelling_that_set_would_lose():
    text = "workflow:\n  name: w\n  tasks:\n  - {name: a, image: 'ubuntu:{{ v }}', command: [x]}\n"
    assert load_text(text, set_items=["v=22.10"]).workflow.task("a").image == "ubuntu:22.1"
    assert load_text(text, set_string_items=["v=22.10"]).workflow.task("a").image == "ubuntu:22.10"


def test_default_values_section_is_not_rendered():
    text = spec("""
        workflow:
          name: w
          tasks:
          - {name: a, image: u, command: [echo, "{{ greeting }}"]}
        default-values:
          greeting: "{{ not_a_variable }}"
        """)
    loaded = load_text(text)
    assert loaded.workflow.task("a").command == ("echo", "{{ not_a_variable }}")
    assert loaded.rendered.text.endswith('greeting: "{{ not_a_variable }}"\n')
    assert loaded.workflow.default_values == {"greeting": "{{ not_a_variable }}"}


# -- errors ---------------------------------------------------------------------------------------------

def test_undefined_variable_names_variable_and_line():
    text = spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: "{{ image_name }}"
            command: [x]
        """)
    with pytest.raises(SpecError) as caught:
        load_text(text, file="w.yaml")
    assert caught.value.line == 5
    assert "undefined template variable 'image_name'" in str(caught.value)
    assert str(caught.value).startswith("w.yaml:5: ")


def test_conformance_data_filter_needs_storage_url():
    with pytest.raises(SpecError) as caught:
        load_file(DATA / "data_filter.yaml")
    assert caught.value.line == 30 and "'storage_url'" in caught.value.message
    outputs = load_file(DATA / "data_filter.yaml", set_items=["storage_url=s3://b"]).workflow.task(
        "selective-download").outputs
    assert outputs[0].url == "s3://b/filtered-output/{{workflow_id}}/"


def test_undefined_variable_in_block_tag():
    text = "workflow:\n  name: w\n{% if gpu_count > 0 %}\n  tasks: []\n{% endif %}\n"
    with pytest.raises(SpecError) as caught:
        render_spec(text)
    assert caught.value.line == 3 and "'gpu_count'" in caught.value.message


def test_template_syntax_error_has_line():
    with pytest.raises(SpecError) as caught:
        render_spec("workflow:\n  name: w\n  x: {{ a b }}\n", overrides={"a": 1})
    assert caught.value.line == 3 and "template syntax error" in caught.value.message


def test_sandbox_blocks_unsafe_attributes():
    with pytest.raises(SpecError) as caught:
        render_spec("x: {{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    assert "unsafe operation" in caught.value.message and "__class__" in caught.value.message
    assert caught.value.line == 1


def test_jinja_loop_generates_groups():
    text = spec("""
        workflow:
          name: {{ name }}
          groups:
          - name: group1
            tasks:
            {% for item in range(3) %}
            - name: "task_{{ item }}"
              image: u
              command: [python3, "{{output}}/{{ item }}"]
              {% if item == 0 %}
              lead: true
              {% endif %}
            {% endfor %}
        default-values:
          name: looped
        """)
    loaded = load_text(text)
    group = loaded.workflow.group("group1")
    assert [t.name for t in group.tasks] == ["task_0", "task_1", "task_2"]
    assert group.lead.name == "task_0" and group.tasks[2].command == ("python3", "{{output}}/2")
    assert loaded.rendered.same_lines is False


# -- substitution per task --------------------------------------------------------------------------------

def test_substitute_tokens_values():
    text = "{{output}} {{ input:0 }} {{input:prep}} {{host:server}} {{workflow_id}}"
    assert substitute_tokens(text, output="/out", inputs=["/in/0"], inputs_by_task={"prep": "/in/0"},
                             hosts={"server": "10.0.0.2"}, workflow_id="w-1") == \
        "/out /in/0 /in/0 10.0.0.2 w-1"
    assert substitute_tokens("no tokens {{ here }}") == "no tokens {{ here }}"


@pytest.mark.parametrize("text,kwargs,named", [
    ("cat {{input:2}}", {"inputs": ["/a", "/b"]}, "{{input:2}}"),
    ("cat {{input:train}}", {"inputs_by_task": {"prep": "/a"}}, "{{input:train}}"),
    ("nc {{ host:db }} 5432", {"hosts": {"server": "h"}}, "{{ host:db }}"),
    ("echo {{output}}", {}, "{{output}}"),
    ("echo {{workflow_id}}", {"output": "/o"}, "{{workflow_id}}"),
])
def test_unknown_token_targets_are_errors_naming_the_token(text, kwargs, named):
    with pytest.raises(SpecError) as caught:
        substitute_tokens(text, **kwargs)
    assert f"unknown token {named}" in str(caught.value)


def test_substitute_task_replaces_every_string():
    workflow = load_text(spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - name: server
              lead: true
              image: u
              command: [sh, -c, "echo {{workflow_id}} > {{output}}/id"]
              environment: {PEER: "{{host:client}}", DATA: "{{input:prep}}"}
              inputs: [{task: "old-1:prep"}]
              outputs: [{url: "s3://b/{{workflow_id}}/"}]
              files: [{path: /tmp/run.sh, contents: "cat {{input:0}}/x"}]
            - {name: client, image: u, command: [x]}
        """)).workflow
    task = substitute_task(workflow.task("server"), output="/w/out", inputs=["/w/in/0"],
                           hosts={"client": "10.1.0.3", "server": "10.1.0.2"}, workflow_id="w-4")
    assert task.command == ("sh", "-c", "echo w-4 > /w/out/id")
    assert task.environment == {"PEER": "10.1.0.3", "DATA": "/w/in/0"}
    assert task.outputs[0].url == "s3://b/w-4/"
    assert task.files[0].contents == "cat /w/in/0/x"
    assert workflow.task("server").command[2] == "echo {{workflow_id}} > {{output}}/id"  # original untouched


# -- limits of time, size and memory ------------------------------------------------------------------

NASTY = {
    "string repetition": "{{ 'x' * 10**10 }}",
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops over a list": "{% set xs = range(100000)|list %}{% for a in xs %}{% for b in xs %}{% endfor %}"
                                "{% endfor %}",
    "big power": "{{ 10 ** (10 ** 10) }}",
    "percent width": "{{ '%999999999s' % 'x' }}",
    "percent star width": "{{ '%*s' % (999999999, 'x') }}",
    "format width": "{{ '{:>999999999}'.format('x') }}",
    "padding filter": "{{ 'x' | center(999999999) }}",
    "padding method": "{{ 'x'.ljust(999999999) }}",
    "doubling macro": "{% macro grow(s) %}{{ grow(s ~ s) }}{% endmacro %}{{ grow('x') }}",
    "doubling statements": "{% set a = 'x' * 16000000 %}" + "".join(
        f"{{% set {n} = {p} ~ {p} %}}" for p, n in zip("abcdefgh", "bcdefghi")) + "{{ i | length }}",
    "long output": "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    "deep recursion": "{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}",
}

# One nasty template in a fresh Python, as `osmo workflow validate` runs it: the error, the seconds it took
# and how far the render raised the process's peak memory above what it had after the imports.
_PROBE = """
import json, resource, sys, time
from osmo_run.spec import SpecError, load_text
body = sys.stdin.read()
text = "workflow:\\n  name: w\\n  tasks:\\n  - name: t\\n    image: u\\n    command:\\n    - echo\\n    - " + body + "\\n"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    load_text(text, file="nasty.yaml")
    error = None
except SpecError as exc:
    error = str(exc)
seconds = time.monotonic() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps([error, seconds, grown]))
"""


def test_nasty_templates_fail_in_seconds_with_bounded_memory():
    import json
    import subprocess
    import sys

    from osmo_run.spec.sandbox import RENDER_MEMORY

    results = {}
    for name, body in NASTY.items():
        done = subprocess.run([sys.executable, "-c", _PROBE], input=body, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (name, done.stderr)
        results[name] = json.loads(done.stdout)
    for name, (error, seconds, grown) in results.items():
        assert error is not None and "template exceeds a limit: " in error, (name, error)
        assert error.startswith("nasty.yaml"), (name, error)
        assert seconds < 6.5, (name, seconds)
        if name not in ("long output",):
            assert error.startswith("nasty.yaml:8: "), (name, error)  # the line of the expression
        # the render's address space is capped at RENDER_MEMORY above where it started
        assert grown < RENDER_MEMORY / 2**20 + 16, (name, grown)
    assert "rendering took longer than 5 s" in results["nested loops"][0]
    assert "range() of 1000000000 items (at most 100000)" in results["huge range"][0]
    assert "a repetition of 1 x 10000000000 items" in results["string repetition"][0]


def test_templates_within_the_limits_still_render():
    text = ("{% for i in range(3) %}{{ i }}{% endfor %} {{ 'ab' * 3 }} {{ 2 ** 64 }} {{ '%5s' % 'x' }} "
            "{{ 'x' | center(7) }}|{{ '{:>4}'.format(1) }} {{ [1, 2] + [3] }} {{ range(4) | length }} "
            "{{ range(10)[3] }} {{ '%d' % 10**20 }} {{ '%d' | format(10**20) }}\n")
    assert render_template(text, {}) == ("012 ababab 18446744073709551616     x    x   |   1 [1, 2, 3] 4 3 "
                                         "100000000000000000000 100000000000000000000\n")
