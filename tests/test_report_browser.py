"""The report page in a real headless browser (Debian's chromium, driven over the DevTools
protocol): it loads from disk (file://, as a user opens it offline) without console errors or
warnings, fetches nothing, every plot's inline <svg> renders with a non-zero size, and a
full-page screenshot is kept as the test's artifact (tmp_path; also test-artifacts/ in the repo
root, or the directory it names, when HARNESS_TEST_ARTIFACTS is set).

The page is the report of tests/data/report/formats-cpu.parquet (a real CPU run), with
tests/data/report/serving.parquet beside it when that file exists (a real serving run). A second
page, from test_report.synthetic_serving_table, checks that the serving plots render in the
browser; its figures are SYNTHETIC and check rendering only, never measurement.

Where chromium is missing, the test fails in CI (CI or HARNESS_CI set, as .ci/run does; .ci/run
installs chromium) and is skipped elsewhere. HARNESS_CHROMIUM names another binary."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness import report
from harness.report.sections import build_sections
from harness.results.read import load_results
from tests.test_report import FORMATS_CPU, QUALITY, SERVING, synthetic_serving_table

ROOT = Path(__file__).resolve().parent.parent
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,1000",
)
LOAD_TIMEOUT_S = 60.0

pytestmark = pytest.mark.timeout(240)


def _in_ci() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("HARNESS_CI"))


def _unavailable(why: str) -> None:
    if _in_ci():
        pytest.fail(
            f"{why} (CI must run the browser check: .ci/run installs Debian's chromium with apt-get)", pytrace=False
        )
    pytest.skip(why)


def _chromium() -> str:
    named = os.environ.get("HARNESS_CHROMIUM")
    found = named or next(
        (
            p
            for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
            if p and os.access(p, os.X_OK)
        ),
        None,
    )
    if not found or not os.access(found, os.X_OK):
        _unavailable(
            f"no chromium at {named or '/usr/bin/chromium or on PATH'}: apt-get install -y chromium (Debian) to run "
            "the browser check"
        )
    return found


def _artifact_dirs(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path]
    wanted = os.environ.get("HARNESS_TEST_ARTIFACTS")
    if wanted:
        dirs.append(ROOT / "test-artifacts" if wanted.lower() in ("1", "true", "yes") else Path(wanted).expanduser())
    return dirs


class _Browser:
    """chromium --headless with a DevTools port, one page target driven over its websocket."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(
                    f"chromium did not open its DevTools port (exit {self.proc.returncode}); its "
                    f"log:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and wait for its answer; events that arrive meanwhile are kept."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not any(e["method"] == method for e in self.events):
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            with contextlib.suppress(Exception):  # the browser may be gone already
                self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # chromium and its own child processes (its session)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


#: every inline SVG's rendered box, and what the page shows otherwise
MEASURE = """JSON.stringify({
  svgs: [...document.querySelectorAll('svg')].map(s => {
    const box = s.getBoundingClientRect();
    return {label: s.getAttribute('aria-label'), width: box.width, height: box.height,
            marks: s.querySelectorAll('rect,circle,polyline,line').length,
            figure: s.closest('figure') ? s.closest('figure').id : null,
            // point labels (9 px text) whose rendered boxes overlap another's
            overlaps: (() => {
              const boxes = [...s.querySelectorAll('text[font-size="9"]')].map(t => t.getBoundingClientRect());
              let n = 0;
              for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const a = boxes[i], b = boxes[j];
                if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) n++;
              }
              return n;
            })(),
            rings: s.querySelectorAll('circle[fill="none"]').length};
  }),
  placeholders: [...document.querySelectorAll('.placeholder')].map(p => p.getBoundingClientRect().height),
  figures: document.querySelectorAll('figure.plot').length,
  sections: document.querySelectorAll('section').length,
  tables: document.querySelectorAll('table').length,
  page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
  viewport: [window.innerWidth, window.innerHeight],
  answers: [...document.querySelectorAll('.answer .ship, .answer .no-answer')].map(a => a.getBoundingClientRect().top),
  regressions: [...document.querySelectorAll('li.regression')].map(li => li.textContent),
})"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    return struct.unpack(">II", data[16:24])


def _check_page(files: report.ReportFiles, tmp_path: Path, name: str) -> dict[str, Any]:
    binary = _chromium()
    try:
        import websockets.sync.client  # noqa: F401 - the DevTools client ([test] extra)
    except ImportError:
        _unavailable("the websockets package (pyproject's [test] extra) is not installed: pip install -e '.[test]'")
    browser = _Browser(binary, tmp_path / f"{name}-profile", tmp_path / f"{name}-chromium.log")
    try:
        for domain in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            browser.send(domain)
        browser.send("Page.navigate", url=files.html.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        found = json.loads(browser.evaluate(MEASURE))
        metrics = browser.send("Page.getLayoutMetrics")
        width, height = (int(metrics["cssContentSize"][k]) for k in ("width", "height"))
        shot = browser.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        )
        browser.send(
            "Runtime.evaluate", expression="1"
        )  # drain: messages logged while the page settled arrive before this answer
    finally:
        browser.close()
    png = base64.b64decode(shot["data"])
    for directory in _artifact_dirs(tmp_path):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.png").write_bytes(png)

    # no console errors or warnings, no uncaught exception, no browser-logged error or warning
    problems = []
    for event in browser.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            problems.append(
                f"console.{params['type']}: {[a.get('value', a.get('description')) for a in params.get('args', [])]}"
            )
        elif method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            entry = params["entry"]
            problems.append(f"log {entry['level']} ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
    assert not problems, f"{name}: the page logged problems:\n" + "\n".join(problems)
    # self-contained: the page itself is the only thing loaded
    requests = [e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert requests == [files.html.resolve().as_uri()], f"{name}: the page fetched more than itself: {requests}"

    # every plot renders: one inline <svg> per plot file, each with a non-zero box and marks in it
    svgs = found["svgs"]
    assert len(svgs) == len(files.plots) > 0, (len(svgs), [p.name for p in files.plots])
    for svg in svgs:
        assert svg["width"] > 0 and svg["height"] > 0, (
            f"{name}: plot {svg['label']!r} ({svg['figure']}) renders with no size: {svg}"
        )
        assert svg["marks"] > 3, f"{name}: plot {svg['label']!r} has nothing drawn in it"
        assert svg["width"] <= found["page"][0], f"{name}: plot {svg['label']!r} is wider than the page"
        if (svg["figure"] or "").endswith("-quality"):  # the Pareto plot: labels readable, the answer marked
            assert svg["overlaps"] == 0, f"{name}: {svg['overlaps']} point labels overlap in {svg['label']!r}"
    assert all(h > 0 for h in found["placeholders"]), f"{name}: a placeholder is not shown"
    # the layout a person meets: no sideways scrolling of the page (wide tables scroll in their
    # own box), and the answer on the first screen
    assert found["page"][0] <= found["viewport"][0], f"{name}: the page overflows sideways: {found['page']}"
    assert found["answers"] and found["answers"][0] < found["viewport"][1], (
        f"{name}: the answer is not on the first screen: {found['answers']} vs {found['viewport']}"
    )
    # the screenshot is the whole page, not a blank viewport
    shot_width, shot_height = _png_size(png)
    assert shot_width >= 800 and shot_height >= 1000 and len(png) > 50_000, (shot_width, shot_height, len(png))
    return found


def test_the_report_of_real_runs_renders_in_chromium(tmp_path: Path) -> None:
    tables = [FORMATS_CPU, QUALITY, *([SERVING] if SERVING.is_file() else [])]
    files = report.build_report(tables, tmp_path / "report")
    found = _check_page(files, tmp_path, "report")
    quality = [svg for svg in found["svgs"] if (svg["figure"] or "").endswith("-quality")]
    assert quality and all(svg["rings"] == 1 for svg in quality)  # the recommended cell is marked
    per_section = len(build_sections(load_results(tables), 5.0)[0].figures)
    assert found["figures"] == found["sections"] * per_section


def test_the_serving_plots_render_in_chromium(tmp_path: Path) -> None:
    """SYNTHETIC serving figures (rendering check only): the latency, memory-split and roofline plots in the browser."""
    files = report.build_report(synthetic_serving_table(tmp_path), tmp_path / "report")
    found = _check_page(files, tmp_path, "report-serving-synthetic")
    figures = {svg["figure"].rsplit("-", 1)[-1] for svg in found["svgs"]}
    assert {"latency", "memory", "roofline"} <= figures
    assert found["tables"] == 3  # the cell table, the KV-cache table (two KV dtypes), the serving table


def test_a_two_run_page_flags_the_real_regression_and_not_the_noise(tmp_path: Path) -> None:
    """SYNTHETIC second run (regression input only): the real quality rows as run one, each with three
    offline repeats; run two copies them with bf16 on vLLM 25 % slower and tight repeats (a real
    regression) and fp8-dynamic 10 % slower with repeats spread ±30 % (noise). In the browser: the
    answer on the first screen, one regression line, for bf16, saying it is outside the noise."""
    import pandas as pd

    first = pd.read_parquet(QUALITY)
    first["output_tok_s_repeats"] = [json.dumps([v * 0.99, v, v * 1.01]) for v in first["output_tok_s"]]
    second = first.copy()
    second["run_id"] = first["run_id"] + "-next"
    for column in ("started_at", "finished_at"):
        second[column] = first[column] + pd.Timedelta(days=1)
    for i, cell in enumerate(second["cell_name"]):
        base = float(first["output_tok_s"].iloc[i])
        spread = {"bf16/vllm/kv-auto": (0.75, 0.01), "fp8-dynamic/vllm/kv-auto": (0.90, 0.30)}.get(cell, (1.0, 0.01))
        repeats = [base * spread[0] * (1 + d * spread[1]) for d in (-1, 0, 1)]
        second.loc[second.index[i], "output_tok_s"] = sum(repeats) / 3
        second.loc[second.index[i], "output_tok_s_repeats"] = json.dumps(repeats)
    table = tmp_path / "two-runs.parquet"
    pd.concat([first, second], ignore_index=True).to_parquet(table)
    files = report.build_report(table, tmp_path / "report")
    assert [(r.cell_name, r.metric) for r in files.regressions] == [("bf16/vllm/kv-auto", "output_tok_s")]
    assert "outside the noise" in files.regressions[0].line()
    found = _check_page(files, tmp_path, "report-two-runs")
    assert found["regressions"] == [files.regressions[0].line()]
