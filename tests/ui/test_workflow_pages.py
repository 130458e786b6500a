"""The workflow pages and API of ``osmo ui`` without a browser: Starlette's TestClient on the app, over
workflows the local runner really ran (tasks as host processes), and the SVG graph and timeline as units.

The browser tests (test_browser_workflows.py) check the same pages live in Chromium; these check what
the server sends: every task on the graph, every attempt on the timeline, logs tagged by task, attempt
and source and masked, errors as statuses, the cross-site token, resubmit with template values.
"""

from __future__ import annotations

import json
import re

import pytest
from starlette.testclient import TestClient

from osmo_ui.app import create_app
from osmo_ui.graph import depths, graph_svg
from osmo_ui.security import Guard
from osmo_ui.sources import Sources
from osmo_ui.timeline import timeline_svg
from helpers.waiting import wait_for
from run.conftest import write_spec

SECRET = "s3cr3t-value-for-the-ui-42"
MASK = "***"  # osmo_run/local/logmask.py


def _demo_spec(folder, name="demo"):
    return write_spec(folder, f"""
        workflow:
          name: {name}
          groups:
          - name: prep
            tasks:
            - name: make
              image: ubuntu
              command: [sh, -c, "echo made-{{{{delay}}}}; mkdir -p {{{{output}}}}/d; echo data > {{{{output}}}}/d/x.txt"]
              outputs:
              - dataset: {{name: ui-results, path: d}}
          - name: train
            tasks:
            - name: fit
              lead: true
              image: ubuntu
              command: [sh, -c, "cat {{{{input:make}}}}/d/x.txt; echo fitting"]
              inputs:
              - task: make
            - name: helper
              image: ubuntu
              command: [sh, -c, "echo helper; echo to-stderr >&2"]
        default-values:
          delay: 1
        """, name=f"{name}.yaml")


@pytest.fixture(scope="module")
def client(ui_osmo):
    """The app in this process, reading the module's isolated osmo (its environment variables)."""
    patch = pytest.MonkeyPatch()
    for key, value in ui_osmo.env.items():
        if key.startswith("OSMO_") or key == "HOME":
            patch.setenv(key, value)
    guard = Guard.for_host("127.0.0.1")
    with TestClient(create_app(Sources(poll_seconds=0.2), guard), base_url="http://127.0.0.1:8642") as test_client:
        test_client.guard = guard
        yield test_client
    patch.undo()


@pytest.fixture(scope="module")
def demo(ui_osmo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-spec")
    workflow_id = ui_osmo.submit(_demo_spec(folder), "--label", "team=perception", "--label", "note=<b>x</b>")
    return workflow_id, ui_osmo.query(workflow_id)


def _post(client, path, body, **headers):
    return client.post(path, content=json.dumps(body),
                       headers={"Content-Type": "application/json", "X-Osmo-CSRF": client.guard.csrf, **headers})


def _events(client, path):
    """The server-sent events of ``path`` until ``end`` or ``problem``: [(event, data)]."""
    found, event = [], None
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                found.append((event, json.loads(line.split(":", 1)[1])))
                if event in ("end", "problem"):
                    break
    return found


def test_the_graph_puts_groups_in_columns_by_depth_and_escapes_names():
    groups = [{"name": "a", "status": "COMPLETED", "upstream": [], "tasks": [{"name": "t1", "status": "COMPLETED"}]},
              {"name": "b<x>", "status": "RUNNING", "upstream": ["a"],
               "tasks": [{"name": "t2", "status": "RUNNING", "lead": True}, {"name": "t3", "status": "FAILED_UPSTREAM"}]},
              {"name": "c", "status": "WAITING", "upstream": ["a", "b<x>"], "tasks": [{"name": "t4", "status": "WAITING"}]}]
    assert depths(groups) == {"a": 0, "b<x>": 1, "c": 2}
    svg = graph_svg(groups)
    tasks = re.findall(r'<g class="task (\w+)" data-task="([^"]+)" data-status="([^"]+)"', svg)
    assert tasks == [("ok", "t1", "COMPLETED"), ("running", "t2", "RUNNING"), ("failed", "t3", "FAILED_UPSTREAM"),
                     ("waiting", "t4", "WAITING")]
    assert "b<x>" not in svg and "b&lt;x&gt;" in svg
    assert len(re.findall(r'class="edge"', svg)) == 3


def test_the_timeline_draws_every_attempt_of_every_task():
    groups = [{"name": "g", "tasks": [
        {"name": "flaky", "attempts": [
            {"attempt": 1, "status": "RESCHEDULED", "started": "2026-12-06T10:00:00.000Z", "ended": "2026-12-06T10:00:05.000Z",
             "exit_code": 5, "reason": "exit 5: RESCHEDULE"},
            {"attempt": 2, "status": "COMPLETED", "started": "2026-12-06T10:00:06.000Z", "ended": "2026-12-06T10:00:09.000Z",
             "exit_code": 0}]},
        {"name": "late", "attempts": [{"attempt": 1, "status": "RUNNING", "started": "2026-12-06T10:00:08.000Z"}]},
        {"name": "never", "attempts": []}]}]
    now = 1796551212.0  # 2026-12-06T10:00:12Z
    svg = timeline_svg(groups, None, now)
    bars = re.findall(r'<rect class="bar (\w+)" data-task="(\w+)" data-attempt="(\d+)"[^>]* x="([\d.]+)"[^>]* width="([\d.]+)"', svg)
    assert [(b[0], b[1], b[2]) for b in bars] == [("retried", "flaky", "1"), ("ok", "flaky", "2"), ("running", "late", "1")]
    x = {(b[1], b[2]): (float(b[3]), float(b[4])) for b in bars}
    assert x[("flaky", "1")][0] < x[("flaky", "2")][0] < x[("late", "1")][0]
    assert abs(x[("flaky", "1")][1] / x[("flaky", "2")][1] - 5 / 3) < 0.01  # widths are durations
    assert "exit 5: RESCHEDULE" in svg and 'data-row="never"' in svg


def test_a_finished_workflows_pages_show_every_task_its_datasets_and_spec(client, demo):
    workflow_id, info = demo
    assert info["status"] == "COMPLETED"
    listing = client.get("/workflows")
    assert listing.status_code == 200
    assert re.search(rf'<tr data-id="{workflow_id}" data-status="COMPLETED" data-pool="local">', listing.text)
    row = listing.text.split(f'<tr data-id="{workflow_id}"')[1].split("</tr>")[0]
    assert '<span class="label">note=&lt;b&gt;x&lt;/b&gt;</span>' in row and '<span class="label">team=perception</span>' in row
    page = client.get(f"/workflows/{workflow_id}")
    assert page.status_code == 200
    names = {t["name"] for g in info["groups"] for t in g["tasks"]}
    assert set(re.findall(r'<g class="task ok" data-task="([^"]+)" data-status="COMPLETED"', page.text)) == names
    assert 'data-from="prep" data-to="train"' in page.text
    assert len(re.findall(r'<rect class="bar ok" data-task=', page.text)) == 3
    written = {f"{d['dataset']}:{d['version']}" for g in info["groups"] for t in g["tasks"] for d in t["datasets_written"]}
    assert "ui-results:1" in written
    for ref in written:
        name, version = ref.split(":")
        assert f'href="/datasets/{name}/{version}"' in page.text
    assert "made-{{delay}}" not in page.text and "made-1" in page.text  # the rendered spec
    api = client.get(f"/api/workflows/{workflow_id}").json()
    train = next(g for g in api["groups"] if g["name"] == "train")
    assert train["upstream"] == ["prep"]
    assert {t["image"] for t in train["tasks"]} == {"ubuntu"}
    assert api["pool"] == "local" and api["runner"] == "local"


def test_the_event_stream_sends_state_then_every_log_line_tagged_then_ends(client, demo):
    workflow_id, _ = demo
    events = _events(client, f"/events/workflows/{workflow_id}")
    kinds = [e for e, _ in events]
    assert kinds[0] == "reset" and kinds[1] == "state" and kinds[-1] == "end"
    state = events[1][1]
    assert state["status"] == "COMPLETED" and not state["active"] and state["attempts"] == [1]
    lines = [tuple(line) for e, data in events if e == "logs" for line in data["lines"]]
    assert ("helper", 1, "task", "to-stderr") in lines and ("fit", 1, "task", "fitting") in lines
    assert ("make", 1, "task", "made-1") in lines
    sources = {(task, source) for task, _, source, _ in lines}
    assert {("make", "osmo"), ("make", "sidecar"), ("fit", "sidecar")} <= sources
    assert all(text.startswith("[osmo-sidecar] ") for _, _, source, text in lines if source == "sidecar")
    assert all(text.startswith("[osmo] ") for _, _, source, text in lines if source == "osmo")
    whole = client.get(f"/api/workflows/{workflow_id}/logs").json()
    assert [tuple(x) for x in whole["lines"]] == lines and whole["finished"] is True


def test_retries_are_separate_attempts_on_the_timeline_and_in_the_logs(client, ui_osmo, tmp_path):
    counter = tmp_path / "count"
    spec = write_spec(tmp_path, f"""
        workflow:
          name: retry
          tasks:
          - name: flaky
            image: ubuntu
            command: [sh, -c, "echo try >> {counter}; echo run-$(wc -l < {counter}); [ $(wc -l < {counter}) -ge 2 ] || exit 5"]
            exitActions: {{RESCHEDULE: 5}}
        """)
    workflow_id = ui_osmo.submit(spec)
    assert ui_osmo.query(workflow_id)["status"] == "COMPLETED"
    page = client.get(f"/workflows/{workflow_id}").text
    assert re.findall(r'<rect class="bar (\w+)" data-task="flaky" data-attempt="(\d)"', page) == [("retried", "1"), ("ok", "2")]
    lines = client.get(f"/api/workflows/{workflow_id}/logs").json()["lines"]
    assert ["flaky", 1, "task", "run-1"] in lines and ["flaky", 2, "task", "run-2"] in lines
    assert {attempt for _, attempt, _, _ in lines} == {1, 2}


def test_credential_values_never_reach_a_page_an_api_answer_or_the_event_stream(client, ui_osmo, tmp_path):
    ui_osmo.pool(grace_period="1s", lead_head_start="0.2s", reschedule_limit=2,
                 credentials={"robot": {"env": {"token": "UI_ROBOT_TOKEN"}}})
    ui_osmo.env["UI_ROBOT_TOKEN"] = SECRET
    patch = pytest.MonkeyPatch()
    patch.setenv("UI_ROBOT_TOKEN", SECRET)  # the UI resolves the same sources to mask again
    try:
        spec = write_spec(tmp_path, """
            workflow:
              name: secretive
              tasks:
              - name: leak
                image: ubuntu
                command: [sh, -c, "echo token is $TOKEN; echo $TOKEN >&2"]
                credentials: {robot: {TOKEN: token}}
            """)
        workflow_id = ui_osmo.submit(spec)
        assert ui_osmo.query(workflow_id)["status"] == "COMPLETED"
        texts = [client.get(path).text for path in ("/workflows", f"/workflows/{workflow_id}",
                                                     f"/api/workflows/{workflow_id}", f"/api/workflows/{workflow_id}/logs")]
        texts.append(json.dumps(_events(client, f"/events/workflows/{workflow_id}")))
        for text in texts:
            assert SECRET not in text
        assert f"token is {MASK}" in texts[3]
    finally:
        patch.undo()
        ui_osmo.pool(grace_period="1s", lead_head_start="0.2s", reschedule_limit=2)


def test_resubmit_renders_the_spec_again_with_the_values_set(client, ui_osmo, demo):
    workflow_id, _ = demo
    answer = _post(client, f"/api/workflows/{workflow_id}/resubmit", {"set": ["delay=7"]})
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["id"]
    assert new_id != workflow_id and answer.json()["url"] == f"/workflows/{new_id}"
    assert "made-7" in ui_osmo("spec", new_id).out
    assert ui_osmo.query(new_id)["labels"] == {"team": "perception", "note": "<b>x</b>"}  # kept
    assert ui_osmo("query", new_id, "--json").json()["status"] in {"PENDING", "WAITING", "SCHEDULING", "INITIALIZING",
                                                                   "RUNNING", "COMPLETED"}
    bad = _post(client, f"/api/workflows/{workflow_id}/resubmit", {"set": ["no-equals-sign"]})
    assert bad.status_code == 400 and "'no-equals-sign' is not NAME=VALUE" in bad.json()["error"]


def test_errors_become_statuses_with_one_line_and_state_changes_need_the_pages_token(client, demo):
    workflow_id, _ = demo
    missing = client.get("/workflows/nosuch-9")
    assert missing.status_code == 404 and 'id="error"' in missing.text and "nosuch-9" in missing.text
    assert client.get("/api/workflows/nosuch-9").json()["code"] == "not_found"
    finished = _post(client, f"/api/workflows/{workflow_id}/cancel", {})
    assert finished.status_code == 409 and finished.json()["error"]
    no_token = client.post(f"/api/workflows/{workflow_id}/cancel", content="{}",
                           headers={"Content-Type": "application/json"})
    assert no_token.status_code == 403
    as_form = client.post(f"/api/workflows/{workflow_id}/cancel", data={"x": "1"},
                          headers={"X-Osmo-CSRF": client.guard.csrf})
    assert as_form.status_code == 403
    elsewhere = _post(client, f"/api/workflows/{workflow_id}/cancel", {}, Origin="http://evil.example")
    assert elsewhere.status_code == 403
    rebinding = client.get("/workflows", headers={"Host": "evil.example:8642"})
    assert rebinding.status_code == 403


def test_a_waiting_group_says_what_it_waits_for_and_a_running_one_what_it_was_granted(client, ui_osmo, tmp_path):
    ui_osmo.pool(capacity={"cpu": 1}, grace_period="1s", lead_head_start="0.2s", reschedule_limit=2)
    try:
        specs = [write_spec(tmp_path, f"""
            workflow:
              name: {name}
              resources:
                default: {{cpu: 1}}
              tasks:
              - name: work
                image: ubuntu
                command: [sh, -c, "echo working; sleep 60"]
            """, name=f"{name}.yaml") for name in ("holder", "queued")]
        holder = ui_osmo("submit", specs[0]).out.strip()
        wait_for(lambda: ui_osmo.query(holder)["status"] == "RUNNING", 60, "the holder to run")
        queued = ui_osmo("submit", specs[1]).out.strip()
        wait_for(lambda: ui_osmo.query(queued)["groups"][0]["reason"], 60, "the queued group's reason")
        waiting = client.get(f"/workflows/{queued}").text
        found = re.search(r'<span class="waiting-for">waiting: ([^<]+)</span>', waiting)
        assert found and ui_osmo.query(queued)["groups"][0]["reason"].split("(")[0].strip()[:40] in found[1]
        running = client.get(f"/workflows/{holder}").text
        assert re.search(r'class="note granted">its group holds on local/[^:]+: 1(\.0)? cpu', running), running
        assert client.get(f"/api/workflows/{holder}").json()["groups"][0]["granted"]["cpu"] == 1
    finally:
        for line in ui_osmo("list", "--json").json():
            if line["status"] not in ("COMPLETED", "FAILED", "FAILED_CANCELED") and line["name"] in ("holder", "queued"):
                ui_osmo("cancel", line["id"], check=False)
        ui_osmo.pool(grace_period="1s", lead_head_start="0.2s", reschedule_limit=2)


def test_a_workflow_answer_asks_once_where_the_workflow_is_recorded(client, demo, monkeypatch):
    """A page polls ``api.workflow`` every second: where the workflow lives (this machine or the cluster's
    records: the pool config and the state database) is asked once per answer, not once per part of it."""
    from osmo_run import api
    from osmo_run.local import service

    workflow_id, _ = demo
    asked, real = [], service.in_cluster
    monkeypatch.setattr(service, "in_cluster", lambda wid: asked.append(wid) or real(wid))
    info = api.workflow(workflow_id)
    assert asked == [workflow_id]
    assert info["status"] == "COMPLETED" and "name: demo" in info["spec"] and info["pool"] == "local"
