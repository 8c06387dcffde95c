"""Volume snapshots and incremental streams against rsync (issue 4).

For volumes of several sizes (64 MiB files plus one small file that changes), measures in
one run: dockyard's first and incremental snapshot times beside `rsync -a --link-dest`
making the same incremental hard-link snapshot, and the size of dockyard's incremental
`volume send` stream beside the bytes `rsync -a` sends to bring a copy up to date.

    .venv/bin/python benchmarks/volumes.py [--sizes-mib 256 2048]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import tempfile
import time
from pathlib import Path

from dockyard.disk.volume_stream import send
from dockyard.disk.volumes import VolumeStore

FILE_MIB = 64
CHANGE = 4096


def fill(live: Path, mib: int) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    for n in range(max(1, mib // FILE_MIB)):
        with (live / f"part-{n:03d}.bin").open("wb") as fh:
            for i in range(FILE_MIB):
                fh.write(block[i % 256 :] + block[: i % 256])
    (live / "table.tsv").write_bytes(b"a" * CHANGE)


def timed(call: object) -> float:
    began = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - began


def measure(root: Path, mib: int) -> dict[str, float]:
    store = VolumeStore(root / "home")
    live = store.ensure("v")
    fill(live, mib)
    first = timed(lambda: store.snapshot("v"))
    rsync_prev = root / "rsync-1"
    subprocess.run(["rsync", "-a", f"{live}/", f"{rsync_prev}/"], check=True)
    (live / "table.tsv").write_bytes(b"b" * CHANGE)  # one small file changes
    incremental = timed(lambda: store.snapshot("v"))
    rsync_snap = timed(
        lambda: subprocess.run(
            ["rsync", "-a", f"--link-dest={rsync_prev}", f"{live}/", f"{root / 'rsync-2'}/"],
            check=True,
        )
    )
    out = io.BytesIO()
    send(store, "v", out, base_ref="1")
    stats = subprocess.run(
        ["rsync", "-a", "--stats", f"{live}/", f"{rsync_prev}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"Total bytes sent: ([\d,]+)", stats)
    assert found, stats
    sent = int(found.group(1).replace(",", ""))
    return {
        "first": first,
        "incremental": incremental,
        "rsync_snapshot": rsync_snap,
        "stream": len(out.getvalue()),
        "rsync_sent": sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 2048])
    args = parser.parse_args()
    print(
        f"{'volume':>8} {'first snap':>11} {'incr. snap':>11} {'rsync --link-dest':>18} "
        f"{'incr. stream':>13} {'rsync sent':>11}   (change: one {CHANGE}-byte file)"
    )
    for mib in args.sizes_mib:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(Path(tmp), mib)
        print(
            f"{mib:>6}Mi {r['first']:>10.2f}s {r['incremental']:>10.3f}s "
            f"{r['rsync_snapshot']:>17.3f}s {int(r['stream']):>12}B {int(r['rsync_sent']):>10}B"
        )


if __name__ == "__main__":
    main()
