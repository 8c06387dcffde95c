"""``dockyard-cwl``: a ``cwl-runner`` that runs CWL on dockyard.

    dockyard-cwl [--outdir DIR] [--quiet] [--cachedir DIR] [--images FILE]
                 [--backend NAME] [--make-images] TOOL_OR_WORKFLOW [JOB]

cwltool's own options are accepted (it parses them); the output object is printed as JSON
on stdout. Exit status: 0 success, 1 a failed tool or workflow (or dockyard could not
run it: the engine is down, an image cannot be found or made), 33 a requirement dockyard
does not support. ``--cachedir DIR`` keeps dockyard's state (its content store and
cache) in DIR, so a rerun reuses what did not change; without it each invocation works in
a state folder of its own, removed at the end, as cwltool without a cache.

This module stays light: a rerun in which nothing changed is answered before cwltool is
imported (:mod:`dockyard.cwl.rerun`).
"""

from __future__ import annotations

import sys

from dockyard.cwl.rerun import answer, simple_invocation


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    invocation = simple_invocation(argv)
    try:
        if invocation is not None and answer(invocation, sys.stdout):
            return 0
    except (KeyError, TypeError, ValueError):
        pass  # (a record of another shape: run as usual, which writes a new one)
    from dockyard.cwl.runner import run_command

    return run_command(argv, invocation)


if __name__ == "__main__":
    sys.exit(main())
