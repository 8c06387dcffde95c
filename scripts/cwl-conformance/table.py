"""The per-tag results of a conformance run as a Markdown table, from cwltest's badge
folder: `python3 scripts/cwl-conformance/table.py BADGEDIR`."""

from __future__ import annotations

import sys
from pathlib import Path

SECTIONS = {
    "passed": "## List of passed",
    "failed": "## List of failed",
    "unsupported": "## List of unsupported",
}


def counts(page: Path) -> dict[str, int]:
    found = dict.fromkeys(SECTIONS, 0)
    section = None
    for line in page.read_text().splitlines():
        for name, heading in SECTIONS.items():
            if line.startswith(heading):
                section = name
        if line.startswith("- [") and section is not None:
            found[section] += 1
    return found


def main(badges: Path) -> None:
    print("| tag | passed | failed | unsupported |")
    print("|---|---:|---:|---:|")
    pages = sorted(
        badges.glob("*.md"), key=lambda p: (p.stem != "all", p.stem != "required", p.stem)
    )
    for page in pages:
        found = counts(page)
        total = sum(found.values())
        print(
            f"| {page.stem} | {found['passed']}/{total} | {found['failed']} | {found['unsupported']} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
