"""The report of a 1,000-instance run (issue 7's goals: written in under 5 s, opened by a
browser in under 2 s).

Builds a state store holding one finished run of 1,000 instances (1,100 attempts, a
tenth of them retried) without running containers, then times `dockyard report` (a
separate process, interpreter start-up included) and headless Chromium loading the page,
beside Chromium loading an empty page (the browser's own floor).

    .venv/bin/python benchmarks/report.py
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dockyard.state.rows import RunRow
from dockyard.state.store import Store
from dockyard.testing.browser import chromium


def build(root: Path, instances: int) -> Path:
    values = ", ".join(f'"{n}"' for n in range(instances - 1))
    path = root / "dockyard.yaml"
    path.write_text(f"""version: 1
name: bench-report
steps:
  work: {{image: busybox:1.36, scatter: {{i: [{values}]}}, command: "true"}}
  total: {{image: busybox:1.36, needs: [work], command: "true"}}
""")
    store = Store(root / ".dockyard" / "state.db")
    rng = random.Random(7)
    names = [(f"work[{n}]", "work") for n in range(instances - 1)] + [("total", "total")]
    start = 1_700_000_000.0
    store.create_run(
        RunRow(
            "bench",
            "bench-report",
            "0" * 64,
            "succeeded",
            start,
            start + 600,
            2.0,
            8 * 1024**3,
            None,
            '{"busybox:1.36": "sha256:x"}',
        ),
        names,
    )
    slots = [start] * 4
    for name, _ in names:
        for attempt in (1, 2) if rng.random() < 0.1 else (1,):
            slot = min(range(4), key=lambda s: slots[s])
            began, took = slots[slot], rng.uniform(0.2, 2.0)
            slots[slot] = began + took
            store.start_attempt("bench", name, attempt, 0.5, 256 * 1024**2, began, "/none")
            store.end_attempt(
                "bench",
                name,
                attempt,
                state="succeeded" if attempt == 2 or rng.random() > 0.1 else "failed",
                exit_code=0,
                reason="exited",
                ended_at=began + took,
                cpu_seconds=took * 0.4,
                peak_memory=rng.randint(10, 200) * 1024**2,
                io_read=0,
                io_write=0,
            )
        store.update_instances("bench", ("state", "output"), [("succeeded", None, name)])
    store.close()
    return path


def timed(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - began


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = build(root, 1000)
        page = root / "report.html"
        write = timed(
            [sys.executable, "-m", "dockyard", "report", "-f", str(path), "-o", str(page)]
        )
        size = page.stat().st_size
        empty = root / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>")
        opened = floor = None
        browser = chromium(root / "profile")
        if browser:
            timed([*browser, "--dump-dom", empty.as_uri()])  # warm the profile
            floor = min(timed([*browser, "--dump-dom", empty.as_uri()]) for _ in range(3))
            opened = min(timed([*browser, "--dump-dom", page.as_uri()]) for _ in range(3))
    print("1,000 instances, 1,100 attempts")
    print(
        f"dockyard report (process, start-up included): {write:.2f} s, page {size / 1e6:.2f} MB"
        "  (goal < 5 s)"
    )
    if opened is not None and floor is not None:
        print(
            f"chromium loads the report: {opened:.2f} s; an empty page: {floor:.2f} s; "
            f"difference {opened - floor:.2f} s  (goal: opens in < 2 s)"
        )
    else:
        print("chromium not found: install Debian's chromium to time the page load")


if __name__ == "__main__":
    main()
