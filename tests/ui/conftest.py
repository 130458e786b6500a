"""Fixtures of the ``osmo ui`` tests, one set per test module (a module's tests share them, to stay fast):

- ``ui_osmo``: an isolated osmo (``Osmo`` of tests/run/conftest.py: its own state dir, store, cache, user
  config and pool config; tasks as plain host processes, ``OSMO_ENGINE=none``; ``HOME`` in the test folder);
- ``ui_server``: ``osmo ui`` serving that environment (tests/servers/osmo_ui.py);
- ``browser``: headless Chromium on that server (tests/ui/browser.py); ``page`` is the same browser
  for one test: screenshots named after the test, a console error fails the test, a failure saves a
  screenshot ``<test>-failure.png``.
"""

from __future__ import annotations

import os

import pytest

from run.conftest import Osmo
from servers.osmo_ui import OsmoUiServer

from .browser import Browser, new_driver


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"ui_report_{report.when}", report)


@pytest.fixture(scope="module")
def ui_osmo(tmp_path_factory) -> Osmo:
    root = tmp_path_factory.mktemp("ui-osmo")
    (root / "home").mkdir()
    osmo = Osmo(root / "osmo", OSMO_ISOLATION="none", HOME=str(root / "home"))
    osmo.pool(grace_period="1s", lead_head_start="0.2s", reschedule_limit=2)
    yield osmo
    for line in osmo.processes():  # workflows a failed test left running
        try:
            os.kill(int(line.split(":")[0]), 9)
        except OSError:
            pass


@pytest.fixture(scope="module")
def ui_server(ui_osmo) -> OsmoUiServer:
    with OsmoUiServer(ui_osmo.env) as server:
        yield server


@pytest.fixture(scope="module")
def browser(ui_server, tmp_path_factory) -> Browser:
    driver = new_driver(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield Browser(driver, ui_server.url)
    finally:
        driver.quit()


@pytest.fixture
def page(browser, ui_server, request) -> Browser:
    """The module's browser for this test: a console error at its end fails it; a failure is screenshot
    and shows what the server logged during the test."""
    browser.begin_test(request.node.name)
    logged_before = len(ui_server.stderr_text())
    yield browser
    call = getattr(request.node, "ui_report_call", None)
    if call is not None and call.failed:
        browser.screenshot("failure")
        print(f"osmo ui's stderr during the test:\n{ui_server.stderr_text()[logged_before:][-6000:]}")
    elif call is not None and call.passed:
        browser.check_console("at the end of the test")
