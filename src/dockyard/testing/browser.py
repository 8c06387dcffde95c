"""Headless Chromium for checking the HTML report (Debian's ``chromium``).

The flags keep it off the network: this machine's closed network refuses the browser's
background connections, and a report page must need none.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(profile: Path) -> list[str] | None:
    """The command line to start a headless Chromium with a fresh ``profile``, or None."""
    found = shutil.which("chromium")
    return None if found is None else [found, *FLAGS, f"--user-data-dir={profile}"]
