"""Python's cyclic garbage collector, out of the way of phases that build a large pipeline.

Expanding 100,000 instances, or settling them from the cache, creates hundreds of
thousands of objects that all stay alive: the collector runs again and again over them
and frees nothing (a sixth of a no-change rerun's time at 100,000 instances). Such phases
run with it paused; objects that live as long as the run are then frozen out of its way.
Reference counting still frees everything that is not a cycle.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
