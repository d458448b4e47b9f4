"""The report in a real browser: headless Chromium opens index.html from disk (file://).

Chromium is driven from its command line only (no extra Python dependency):
``--dump-dom`` on a copy of the page that carries one extra inline script (allowed
through the page's Content-Security-Policy by a nonce), which records errors and
image states and writes them into the DOM; ``--enable-logging=stderr`` shows the
console; ``--screenshot`` takes a picture of the real page.

Chromium missing: the tests skip, unless ``GOUP_PROBE_REQUIRE_BROWSER=1`` (set by
``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from goup_probe.report import report
from tests.report_synth import synthetic_run

pytestmark = pytest.mark.browser

NONCE = "goupcheck"
CHECK_SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push('resource failed: ' + (t.src || t.href)); }
    else { errors.push('error: ' + e.message); }
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    errors.push('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
  });
  var original = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var result = {
      errors: errors,
      images: Array.prototype.map.call(document.images, function (i) {
        return {src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth};
      }),
      h2: Array.prototype.map.call(document.querySelectorAll('h2'), function (h) { return h.textContent; }),
      h4: Array.prototype.map.call(document.querySelectorAll('h4'), function (h) { return h.textContent; }),
      scripts: document.scripts.length,
      title: document.title,
      alerted: window.__goupAlerted === true
    };
    var pre = document.createElement('pre');
    pre.id = 'goup-check';
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  });
  window.alert = function () { window.__goupAlerted = true; errors.push('alert() was called'); };
})();
"""
CONSOLE_PROBLEM = re.compile(r"CONSOLE.*|Refused to|net::ERR_|Uncaught", re.IGNORECASE)


def chromium() -> str:
    """Path of the Chromium binary, or skip/fail as the environment demands."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("GOUP_PROBE_REQUIRE_BROWSER") == "1":
        pytest.fail("headless Chromium is required (GOUP_PROBE_REQUIRE_BROWSER=1) but not installed")
    pytest.skip("Chromium is not installed (Debian package 'chromium')")


def run_chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def check_page(index: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Load a nonce-instrumented copy of ``index`` and return the in-page results and console lines."""
    page = index.read_text(encoding="utf-8")
    assert "default-src 'none'" in page, "the report must carry its Content-Security-Policy"
    instrumented = page.replace("default-src 'none';", f"default-src 'none'; script-src 'nonce-{NONCE}';", 1)
    instrumented = instrumented.replace(
        "<head>", f'<head>\n<script nonce="{NONCE}">{CHECK_SCRIPT}</script>', 1
    )
    check = index.with_name("_browser_check.html")
    check.write_text(instrumented, encoding="utf-8")
    try:
        proc = run_chromium(
            ["--virtual-time-budget=10000", "--dump-dom", check.resolve().as_uri()], tmp / "profile-dom"
        )
    finally:
        check.unlink()
    match = re.search(r'<pre id="goup-check">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert match, f"the page did not report back (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    result = json.loads(html.unescape(match.group(1)))
    console = [line for line in proc.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]
    return result, console


def console_of_real_page(index: Path, tmp: Path, screenshot: Path) -> list[str]:
    """Screenshot the unmodified page and return any console complaints while loading it."""
    proc = run_chromium(
        ["--window-size=1400,4000", f"--screenshot={screenshot}", index.resolve().as_uri()],
        tmp / "profile-shot",
    )
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]


def _save_screenshot(shot: Path, name: str) -> None:
    target = os.environ.get("GOUP_PROBE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / name)


EXPECTED_H2 = [
    "Summary",
    "Per-layer detail",
    "Over training",
    "All tensors",
    "Ornstein–Uhlenbeck model",
    "GO-UP fidelity",
    "Gradient noise",
    "Glossary",
]


def test_demo_like_report_loads_without_errors_and_every_image_renders(tmp_path):
    chromium()
    run_dir = synthetic_run(tmp_path / "run", n_params=9, steps=[0, 10, 20, 30], numel=300, keep=150)
    result = report(run_dir, tmp_path / "report", per_side=2)
    page, console = check_page(result.index, tmp_path)
    assert page["errors"] == []
    assert console == []
    assert page["h2"] == EXPECTED_H2
    assert len(page["images"]) == len(result.figures) > 5
    broken = [i for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    shot = tmp_path / "report.png"
    assert console_of_real_page(result.index, tmp_path, shot) == []
    _save_screenshot(shot, "report-synthetic.png")


def test_hostile_layer_names_are_shown_as_text_and_execute_nothing(tmp_path):
    chromium()
    hostile = ["<script>alert(1)</script>", "../../x", '<img src=x onerror="alert(2)">', "ok.weight"]
    run_dir = synthetic_run(tmp_path / "run", params=hostile, steps=[0, 10], numel=200, keep=100)
    result = report(run_dir, tmp_path / "report", per_side=2)
    page, console = check_page(result.index, tmp_path)
    assert page["errors"] == [] and console == []
    assert page["alerted"] is False
    assert page["scripts"] == 1  # only the test's own, nonce-carrying script
    for name in hostile:
        assert name in page["h4"], f"{name!r} must appear literally as a heading"
    broken = [i for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == []
    shot = tmp_path / "hostile.png"
    assert console_of_real_page(result.index, tmp_path, shot) == []
    _save_screenshot(shot, "report-hostile.png")


def test_broken_image_is_detected(tmp_path):
    """The check itself must fail when an image does not load (guards against a vacuous test)."""
    chromium()
    run_dir = synthetic_run(tmp_path / "run", n_params=2, steps=[0, 10], numel=100, keep=50)
    result = report(run_dir, tmp_path / "report", ou=False)
    victim = result.out_dir / result.figures[0].relpath
    victim.write_bytes(b"not a png")
    page, _ = check_page(result.index, tmp_path)
    broken = [i["src"] for i in page["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == [result.figures[0].relpath]
