"""The HTML storage report in a real browser: headless Chromium loads it, dumps the DOM, takes a
screenshot, and reports any console error.

Needs Debian's chromium (`.ci/install-chromium.sh`); without it these tests fail, they never skip.
The screenshot PNG is decoded here with zlib (no imaging library).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers.tools import require_tool
from osmo_store.report import estimate_costs, load_prices, to_html

TIMEOUT = 90
WINDOW = (1280, 2400)
BACKGROUND = (0xF4, 0xF6, 0xF8)  # the page background of html.py
PALETTE = {"new": (0x21, 0x66, 0xAC), "unique": (0xE0, 0x82, 0x14),
           "with dedup": (0x1B, 0x9E, 0x77), "without dedup": (0xB8, 0xB8, 0xB8)}
GIB = 1024**3
DATASETS = {"lidar": 5, "camera-front": 8, "sim_assets": 3}  # name -> number of versions
CONSOLE = re.compile(r"CONSOLE[:(]|Uncaught")




def synthetic_report() -> dict:
    """Three datasets, several versions each; later versions share most bytes with earlier ones."""
    datasets = []
    for i, (name, count) in enumerate(DATASETS.items()):
        versions = []
        for v in range(1, count + 1):
            logical = (i + 2) * GIB + v * 300 * 1024**2
            stored = logical if v == 1 else logical // (4 + v % 3)
            unique = stored * 2 // 3
            versions.append({"version": v, "created": 1790000000.0 + 86400 * v, "tags": ["prod"] if v == count else [],
                             "logical_bytes": logical, "stored_bytes": stored, "unique_bytes": unique,
                             "new_bytes": stored if v == 1 else stored // 3,
                             "shared_bytes": stored - unique, "dedup_ratio": logical / stored,
                             "compression_ratio": 1.2})
        logical = sum(v["logical_bytes"] for v in versions)
        stored = sum(v["stored_bytes"] for v in versions)
        datasets.append({"name": name, "logical_bytes": logical, "stored_bytes": stored,
                         "unique_bytes": stored * (3 - i) // 4, "shared_bytes": stored - stored * (3 - i) // 4,
                         "dedup_ratio": logical / stored, "compression_ratio": 1.2, "versions": versions})
    stored = sum(d["stored_bytes"] for d in datasets)
    logical = sum(d["logical_bytes"] for d in datasets)
    return {"generated": 1795260869.8,
            "store": {"url": "s3://robot-data/osmo", "stored_bytes": stored, "live_bytes": stored - GIB,
                      "dead_bytes": GIB, "logical_bytes": logical, "packs": 31, "chunks": 52000, "objects": 120,
                      "requests": {"upload_per_gb": 16.0, "download_per_gb": 48.0}},
            "datasets": datasets,
            "costs": estimate_costs(stored, logical, load_prices())}


def run_chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless on ``page`` with a private profile and console messages logged to stderr."""
    chromium = require_tool("chromium")  # a missing browser fails the test, never skips it
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", *args, page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the browser and its helper processes: its own group
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT} s: {' '.join(cmd)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def console_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log that are page console messages or uncaught exceptions."""
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


class Bars(HTMLParser):
    def __init__(self, dom: str):
        super().__init__()
        self.ids: set[str] = set()
        self.bars: Counter[str] = Counter()
        self._svg: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "svg":
            self._svg = a.get("id")
        elif tag == "rect" and self._svg and "bar" in (a.get("class") or "").split():
            self.bars[self._svg] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into rows of RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    prev, rows = bytearray(stride), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                a, b = (line[i - bpp] if i >= bpp else 0), prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


def test_report_dom_after_load_has_every_chart_and_bar(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(to_html(synthetic_report()), encoding="utf-8")
    run = run_chromium(tmp_path, page, "--dump-dom")
    assert console_errors(run.stderr) == []
    dom = Bars(run.stdout)
    assert {"chart-unique", "chart-costs"} <= dom.ids
    for name, count in DATASETS.items():
        assert dom.bars[f"chart-versions-{name}"] == 2 * count, name
    assert dom.bars["chart-unique"] == len(DATASETS)
    assert dom.bars["chart-costs"] == 2 * len(load_prices())


def test_report_screenshot_is_not_blank(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(to_html(synthetic_report()), encoding="utf-8")
    shot = tmp_path / "report.png"
    run = run_chromium(tmp_path, page, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}")
    assert console_errors(run.stderr) == []
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == WINDOW
    pixels: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        pixels.update(zip(row[0::3], row[1::3], row[2::3]))
    total = width * height
    ink = total - pixels[(255, 255, 255)] - pixels[BACKGROUND]
    assert ink / total > 0.05, f"only {ink / total:.1%} of the screenshot is neither white nor background"
    # Each chart colour covers a visible area: the bars of all three charts were painted.
    painted = {name: pixels[rgb] for name, rgb in PALETTE.items()}
    assert all(n >= 300 for n in painted.values()), painted
    assert len(pixels) >= 50  # text antialiasing, axes, tables: far from a flat image


def test_console_errors_are_caught(tmp_path):
    """The console check is real: a page with a script error is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>broken</title></head><body>"
                    "<p>report</p><script>console.error('deliberate console error');"
                    "notAFunction();</script></body></html>", encoding="utf-8")
    run = run_chromium(tmp_path, page, "--dump-dom")
    errors = console_errors(run.stderr)
    assert any("Uncaught ReferenceError" in line and "notAFunction" in line for line in errors), run.stderr[-3000:]
    assert any("deliberate console error" in line for line in errors)
