"""Selenium helpers for the ``osmo ui`` browser tests: Debian's headless Chromium driven through its
chromedriver (explicit paths: Selenium Manager never downloads anything), console messages collected,
a screenshot of every page visited.

``new_driver(profile_dir)`` starts the browser; ``Browser(driver, base_url)`` is what a test uses:
``open(path, page)`` loads a page, waits until it is loaded, saves ``<test>-<page>.png`` and fails on a
console error; ``wait(condition, what)`` polls the page; ``console_errors()`` / ``check_console()``.
Screenshots go to ``$OSMO_UI_ARTIFACTS``, by default ``<repo>/test-artifacts/ui`` (gitignored).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from helpers.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS_ENV = "OSMO_UI_ARTIFACTS"
WINDOW = (1280, 1000)
WAIT_SECONDS = 30.0
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def artifacts_dir() -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "test-artifacts" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "page"


def new_driver(profile_dir: Path) -> webdriver.Chrome:
    """Headless Chromium with a private profile, a fixed window and console messages kept for ``get_log``.
    A missing chromium or chromedriver fails the test with the command that installs it."""
    for tool, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not os.access(path, os.X_OK):
            require_tool(tool)  # fails naming .ci/install-chromium.sh when absent
            pytest.fail(f"{path} is missing (another {tool} is on PATH); install Debian's with: "
                        "bash .ci/install-chromium.sh", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_SECONDS)
    driver.set_script_timeout(WAIT_SECONDS)
    return driver


class Browser:
    """One browser shared by a module's tests; ``test_name`` names the screenshots of the running test."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.test_name = "session"
        self.console: list[dict] = []  # every console entry seen, in order
        self._allowed: list[Callable[[dict], bool]] = []

    # ------------------------------------------------------------------------------------- pages
    def open(self, path: str, page: str | None = None, expect_status: int | None = None) -> None:
        """Load ``base_url + path``, wait until loaded, screenshot it, fail on any console error. With
        ``expect_status`` (an error page), the browser's own report of that status for this URL is allowed."""
        url = self.base_url + path
        if expect_status is not None:
            self._allowed.append(lambda e: e["message"].startswith(url) and f"status of {expect_status}" in e["message"])
        self.driver.get(url)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete", f"{path} to load")
        self.screenshot(page or path)
        self.check_console(f"loading {path}")

    def screenshot(self, page: str) -> Path:
        path = artifacts_dir() / f"{_file_part(self.test_name)}-{_file_part(page)}.png"
        self.driver.save_screenshot(str(path))
        return path

    @property
    def path(self) -> str:
        """The current page's path and query."""
        url = self.driver.current_url
        return url[len(self.base_url):] if url.startswith(self.base_url) else url

    # -------------------------------------------------------------------------------- the console
    def console_errors(self) -> list[dict]:
        """Console entries of level SEVERE since the test began (CSP violations, failed requests, exceptions)."""
        self.console.extend(self.driver.get_log("browser"))
        return [e for e in self.console if e["level"] == "SEVERE" and not any(ok(e) for ok in self._allowed)]

    def check_console(self, when: str) -> None:
        errors = self.console_errors()
        if errors:
            lines = "\n".join(f"  {e['level']} {e.get('source', '')}: {e['message']}" for e in errors)
            pytest.fail(f"console errors in the browser ({when}, page {self.path}):\n{lines}", pytrace=False)

    def begin_test(self, name: str) -> None:
        """Start a test: its screenshots of an earlier run go, the console is emptied."""
        self.test_name = name
        for old in artifacts_dir().glob(f"{_file_part(name)}-*.png"):
            old.unlink()
        self.dismiss_alert()  # a dialog an earlier test left open would refuse every command
        self.driver.get_log("browser")  # drop what earlier tests left
        self.console = []
        self._allowed = []

    def dismiss_alert(self) -> None:
        try:
            self.driver.switch_to.alert.dismiss()
        except (NoAlertPresentException, WebDriverException):
            pass

    # ---------------------------------------------------------------------------------- elements
    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, css: str) -> str | None:
        """The text content of the first element matching ``css``, shown or not (None if there is none)."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def attr(self, css: str, name: str) -> str | None:
        """An attribute of the first element matching ``css`` (None if there is none), read in the page."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            css, name)

    def wait(self, condition: Callable[[webdriver.Chrome], object], what: str | Callable[[], str],
             timeout: float = WAIT_SECONDS):
        """``condition(driver)``'s first truthy result; fails naming ``what`` (a text, or a function giving
        it at the time of failure) and the page on timeout, with a screenshot."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            pass
        self.screenshot("timeout")
        text = what() if callable(what) else what
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {text} on {self.path}", pytrace=False)

    def wait_attr(self, css: str, name: str, value: str, timeout: float = WAIT_SECONDS) -> None:
        """Until the first ``css`` element's attribute ``name`` is ``value``."""
        self.wait(lambda d: self.attr(css, name) == value,
                  lambda: f"{css} {name}={value!r} (it is {self.attr(css, name)!r})", timeout)

    def choose(self, css: str, value: str) -> None:
        """Pick the option of value ``value`` in the ``<select>`` at ``css`` with the keyboard, as a user
        does (the page sees "input" and "change"; Selenium's ``Select`` fires "change" only)."""
        select = self.find(css)
        options = [(o.get_attribute("value"), o.get_attribute("index")) for o in select.find_elements(By.TAG_NAME, "option")]
        target = next((int(index) for v, index in options if v == value), None)
        if target is None:
            pytest.fail(f"{css} has no option {value!r} (it has {[v for v, _ in options]})", pytrace=False)
        current = int(self.driver.execute_script("return arguments[0].selectedIndex;", select))
        key = Keys.ARROW_DOWN if target > current else Keys.ARROW_UP
        select.send_keys(*[key] * abs(target - current))
        self.wait(lambda d: d.execute_script("return arguments[0].value;", select) == value,
                  f"{css} to show {value!r}")

    def set_marker(self) -> str:
        """A value put on ``window``: still there later means the page was not reloaded."""
        marker = os.urandom(8).hex()
        self.driver.execute_script("window.osmoTestMarker = arguments[0];", marker)
        return marker

    def marker(self) -> str | None:
        return self.driver.execute_script("return window.osmoTestMarker || null;")

    def fetch(self, path: str) -> dict:
        """GET ``path`` with the page's ``fetch`` (same origin, cookies): status, headers and body bytes."""
        result = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], {credentials: "same-origin"}).then(async (r) => {
              const bytes = Array.from(new Uint8Array(await r.arrayBuffer()));
              done({status: r.status, headers: Object.fromEntries(r.headers.entries()), bytes: bytes});
            }).catch((e) => done({error: String(e)}));
        """, path)
        if "error" in result:
            pytest.fail(f"fetch {path} in the page failed: {result['error']}", pytrace=False)
        result["body"] = bytes(result.pop("bytes"))
        return result
