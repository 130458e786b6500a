"""The workflow pages of ``osmo ui`` in headless Chromium, over real workflows of the local runner (plain
host processes): pages load without console errors, statuses and logs arrive live (no reload), the graph
has every task, cancel and resubmit work from the page, the log filters, and a retried task's attempts.

One ``osmo ui`` server and one browser serve the whole module (tests/ui/conftest.py); each test runs its
own workflows. The DOM these tests read is the contract in docs/UI.md."""

from __future__ import annotations

import uuid

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from run.conftest import tasks_of, write_spec

TASK_LINE = "div#logs div.line"


def _submit(osmo, tmp_path, text: str, *args: str) -> str:
    return osmo.submit(write_spec(tmp_path, text, f"{uuid.uuid4().hex[:6]}.yaml"), *args, wait=False)


def _visible_lines(page) -> list[dict]:
    """The log lines shown (not hidden by a filter): their text and data attributes."""
    return page.driver.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0]))
          .filter((e) => e.offsetParent !== null)
          .map((e) => ({text: e.textContent, task: e.dataset.task, attempt: e.dataset.attempt,
                        source: e.dataset.source}));
    """, TASK_LINE)


def _line_shown(page, text: str) -> bool:
    return any(text in line["text"] for line in _visible_lines(page))


def _accept_confirm(page, within: float = 1.0) -> bool:
    """Accept the page's ``confirm()`` if it asks within ``within`` s; whether it asked."""
    try:
        WebDriverWait(page.driver, within, poll_frequency=0.05).until(expected_conditions.alert_is_present()).accept()
        return True
    except TimeoutException:
        return False


def test_every_workflow_page_loads_without_console_errors(page, ui_osmo, tmp_path):
    workflow_id = ui_osmo.submit(write_spec(tmp_path, """
        workflow:
          name: quick
          tasks:
          - {name: hello, image: u, command: [sh, -c, "echo hello from quick"]}
        """))
    assert ui_osmo.query(workflow_id)["status"] == "COMPLETED"
    page.open("/workflows", "list")
    assert page.attr(f"table#workflows tr[data-id='{workflow_id}'] span.status", "data-status") == "COMPLETED"
    page.open(f"/workflows/{workflow_id}", "workflow")
    page.wait_attr("span#workflow-status", "data-status", "COMPLETED")
    assert "echo hello from quick" in page.text_of("pre#spec")
    page.wait(lambda d: _line_shown(page, "hello from quick"), "the task's log line in div#logs")
    page.open("/workflows/no-such-workflow-1", "unknown-workflow", expect_status=404)
    assert "no-such-workflow-1" in page.find("body").text


def test_list_updates_a_running_workflow_without_reload(page, ui_osmo, tmp_path):
    workflow_id = _submit(ui_osmo, tmp_path, """
        workflow:
          name: listed
          tasks:
          - {name: sleeper, image: u, command: [sh, -c, "echo start; sleep 4"]}
        """)
    page.open("/workflows", "list-running")
    status = f"table#workflows tr[data-id='{workflow_id}'] .status"
    page.wait_attr(status, "data-status", "RUNNING")
    marker = page.set_marker()
    page.wait_attr(status, "data-status", "COMPLETED")
    assert page.marker() == marker, "the list page was reloaded"
    page.screenshot("list-completed")
    assert ui_osmo.query(workflow_id)["status"] == "COMPLETED"


def test_workflow_page_shows_logs_while_running_and_completes_without_reload(page, ui_osmo, tmp_path):
    line = f"progress-{uuid.uuid4().hex[:10]}"
    workflow_id = _submit(ui_osmo, tmp_path, f"""
        workflow:
          name: live
          tasks:
          - {{name: worker, image: u, command: [sh, -c, "echo {line}; sleep 6; echo finished"]}}
        """)
    page.open(f"/workflows/{workflow_id}", "running")
    node = "svg#graph g.task[data-task='worker']"
    row = "table#tasks tr[data-task='worker'] span.status"
    page.wait_attr(node, "data-status", "RUNNING")
    page.wait_attr(row, "data-status", "RUNNING")
    marker = page.set_marker()
    page.wait(lambda d: _line_shown(page, line), f"{line!r} in div#logs")
    # the line arrived while the task still ran: on the page and for the runtime (its only task)
    assert page.attr(node, "data-status") == "RUNNING"
    assert ui_osmo.status(workflow_id) == "RUNNING"
    page.screenshot("log-while-running")
    page.wait_attr(node, "data-status", "COMPLETED")
    page.wait_attr(row, "data-status", "COMPLETED")
    page.wait_attr("span#workflow-status", "data-status", "COMPLETED")
    page.wait(lambda d: _line_shown(page, "finished"), "the last log line")
    assert page.marker() == marker, "the workflow page was reloaded"
    page.screenshot("completed")


def test_graph_shows_every_task_of_a_multi_group_workflow(page, ui_osmo, tmp_path):
    workflow_id = ui_osmo.submit(write_spec(tmp_path, """
        workflow:
          name: graph
          groups:
          - name: prepare
            tasks:
            - {name: fetch, lead: true, image: u, command: [sh, -c, "echo fetched"]}
            - {name: index, image: u, command: [sh, -c, "echo indexed"]}
          - name: train
            tasks:
            - {name: learn, lead: true, image: u, command: [sh, -c, "echo learned"], inputs: [{task: fetch}]}
            - {name: watch, image: u, command: [sh, -c, "echo watched"]}
          - name: report
            tasks:
            - {name: summary, image: u, command: [sh, -c, "echo done"], inputs: [{task: learn}]}
        """))
    info = ui_osmo.query(workflow_id)
    assert info["status"] == "COMPLETED", ui_osmo.logs(workflow_id)
    page.open(f"/workflows/{workflow_id}", "graph")
    nodes = page.find_all("svg#graph g.task")
    assert sorted(n.get_attribute("data-task") for n in nodes) == sorted(tasks_of(info))
    assert {n.get_attribute("data-status") for n in nodes} == {"COMPLETED"}
    assert sorted(r.get_attribute("data-task") for r in page.find_all("table#tasks tr[data-task]")) == \
        sorted(tasks_of(info))


def test_cancel_from_the_page(page, ui_osmo, tmp_path):
    workflow_id = _submit(ui_osmo, tmp_path, """
        workflow:
          name: doomed
          tasks:
          - {name: forever, image: u, command: [sh, -c, "echo waiting; sleep 300"]}
        """)
    page.open(f"/workflows/{workflow_id}", "before-cancel")
    page.wait_attr("svg#graph g.task[data-task='forever']", "data-status", "RUNNING")
    page.find("button#cancel").click()
    _accept_confirm(page)
    page.wait_attr("span#workflow-status", "data-status", "FAILED_CANCELED")
    page.screenshot("canceled")
    info = ui_osmo.wait(workflow_id, 30)
    assert info["status"] == "FAILED_CANCELED"


def test_resubmit_with_set_values_from_the_page(page, ui_osmo, tmp_path):
    value = f"v{uuid.uuid4().hex[:8]}"
    first = ui_osmo.submit(write_spec(tmp_path, """
        workflow:
          name: again
          tasks:
          - {name: say, image: u, command: [sh, -c, "echo greeting={{greeting}}"]}
        default-values:
          greeting: hello
        """))
    page.open(f"/workflows/{first}", "before-resubmit")
    page.find("input#resubmit-set").send_keys(f"greeting={value}")
    page.find("button#resubmit").click()
    _accept_confirm(page)

    def new_id() -> str | None:
        known = {w["id"] for w in ui_osmo("list", "--json").json()} - {first}
        shown = page.path + " " + (page.find("div#flash").text if page.find_all("div#flash") else "")
        return next((wid for wid in known if wid in shown), None)

    second = page.wait(lambda d: new_id(), "the new workflow's id on the page (navigated to it or flashed)")
    page.screenshot("after-resubmit")
    assert second != first
    info = ui_osmo.wait(second, 60)
    assert info["status"] == "COMPLETED"
    assert f"greeting={value}" in ui_osmo.logs(second)
    assert "greeting=hello" in ui_osmo.logs(first)


def test_log_filters_by_source_and_text(page, ui_osmo, tmp_path):
    tag = uuid.uuid4().hex[:8]
    workflow_id = ui_osmo.submit(write_spec(tmp_path, f"""
        workflow:
          name: chatty
          tasks:
          - name: talk
            image: u
            command: [sh, -c, "echo alpha-{tag}; echo beta-{tag}; echo kept > {{{{output}}}}/result.txt"]
        """))
    assert ui_osmo.query(workflow_id)["status"] == "COMPLETED", ui_osmo.logs(workflow_id)
    page.open(f"/workflows/{workflow_id}", "logs")
    page.wait(lambda d: _line_shown(page, f"beta-{tag}"), "the task's lines")
    page.wait(lambda d: any(line["source"] == "sidecar" for line in _visible_lines(page)),
              "a sidecar line (the output upload)")
    page.choose("select#log-source", "sidecar")
    page.wait(lambda d: not _line_shown(page, f"alpha-{tag}"), "the task's lines to be hidden")
    shown = _visible_lines(page)
    assert shown and {line["source"] for line in shown} == {"sidecar"}, shown
    page.screenshot("sidecar-only")
    page.choose("select#log-source", "")
    search = page.find("input#log-search")
    search.send_keys(f"alpha-{tag}")
    page.wait(lambda d: [line["text"] for line in _visible_lines(page)] != [] and
              all(f"alpha-{tag}" in line["text"] for line in _visible_lines(page)), "only the matching line")
    assert not _line_shown(page, f"beta-{tag}")
    page.screenshot("searched")


def test_a_rescheduled_task_shows_both_attempts(page, ui_osmo, tmp_path):
    counter = tmp_path / "starts"
    workflow_id = ui_osmo.submit(write_spec(tmp_path, f"""
        workflow:
          name: retried
          tasks:
          - name: flaky
            image: u
            command: [sh, -c]
            args: ["echo x >> {counter}; echo attempt-$(wc -l < {counter}); [ $(wc -l < {counter}) -ge 2 ] || exit 5"]
            exitActions: {{COMPLETE: 0, RESCHEDULE: 5}}
        """))
    info = ui_osmo.query(workflow_id)
    assert [a["status"] for a in tasks_of(info)["flaky"]["attempts"]] == ["RESCHEDULED", "COMPLETED"]
    page.open(f"/workflows/{workflow_id}", "retried")
    bars = page.find_all("svg#timeline rect.bar[data-task='flaky']")
    assert sorted(b.get_attribute("data-attempt") for b in bars) == ["1", "2"]
    options = [o.get_attribute("value") for o in page.find_all("select#log-attempt option")]
    assert {"1", "2"} <= set(options), options
    page.choose("select#log-attempt", "1")
    page.wait(lambda d: _line_shown(page, "attempt-1") and not _line_shown(page, "attempt-2"),
              "attempt 1's lines only")
    page.screenshot("attempt-1")
