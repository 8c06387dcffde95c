"""The harness's daemons never hold the output of the command that started them, so that
``nodes=$(scripts/swarm-local.sh up 3)`` returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def test_a_spawned_process_does_not_hold_its_starter_s_captured_output() -> None:
    code = (
        "from dockyard.testing.dockerd import Process\n"
        "print(Process.spawn(['sleep', '60']).pid, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )  # (reading to the end: would wait the sleep's 60 s out if it held the pipe)
    pid = int(done.stdout.strip())
    try:
        assert done.returncode == 0, done.stderr
        assert os.path.exists(f"/proc/{pid}")  # (still running: it just holds nothing)
    finally:
        os.kill(pid, signal.SIGKILL)
