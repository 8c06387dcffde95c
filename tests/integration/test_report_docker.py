"""`dockyard report`: one self-contained page, checked in headless Chromium (issue 7)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.testing.browser import chromium
from tests.conftest import BUSYBOX_IMAGE, WritePipeline

pytestmark = pytest.mark.docker

FIRST = """
version: 1
name: {name}
defaults: {{image: "{image}", resources: {{cpus: 0.5, memory: 32m}}}}
steps:
  prep: {{command: "echo prep > /out/p"}}
"""
MORE = """
  flaky:
    needs: [prep]
    retries: 1
    command: 'test $$DOCKYARD_ATTEMPT -ge 2 || exit 3; echo ok > /out/x'
  greedy:
    needs: [prep]
    resources: {{memory: 24m}}
    retries: {{max: 1, memory_factor: 4}}
    command: ["awk", "BEGIN {{ s = \\"x\\"; while (length(s) < 16777216) s = s s }}"]
  broken: {{needs: [prep], command: "echo something went wrong >&2; exit 2"}}
"""


def test_report_shows_cached_retried_oom_and_failed_work_and_renders_cleanly(
    write_pipeline: WritePipeline,
    pipeline_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_pipeline(FIRST.format(name=pipeline_name, image=BUSYBOX_IMAGE))
    assert main(["run", "-f", str(path)]) == 0
    path.write_text(path.read_text() + MORE.format())
    assert main(["run", "-f", str(path), "--keep-going"]) == 1
    page = tmp_path / "report.html"
    assert main(["report", "-f", str(path), "-o", str(page)]) == 0
    html = page.read_text()

    assert "cached 1" in html  # prep
    assert re.search(r"<td>flaky</td><td>1</td><td>failed</td><td>3</td>", html)
    assert re.search(r"<td>greedy</td><td>1</td><td>out-of-memory</td><td>137</td>", html)
    assert "something went wrong" in html and "exited with status 2" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained

    shot = tmp_path / "report.png"
    command = chromium(tmp_path / "chromium-profile")
    assert command, "headless Chromium is needed (Debian: apt-get install chromium)"
    browse = [*command, "--enable-logging=stderr", "--v=0"]
    screenshot = subprocess.run(
        [*browse, f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 20_000, screenshot.stderr[-2000:]
    assert "Uncaught" not in screenshot.stderr and "CONSOLE" not in screenshot.stderr

    dom = subprocess.run(
        [*browse, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    # The graph draws one node per step; the timeline one bar per attempt that ran.
    assert len(re.findall(r'<g class="node"', dom)) == 4
    assert len(re.findall(r'<rect class="attempt ', dom)) == 5  # flaky 2, greedy 2, broken 1
    assert len(re.findall(r'<rect class="attempt out-of-memory"', dom)) == 1
