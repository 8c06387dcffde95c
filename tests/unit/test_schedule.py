from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dockyard.planning.schedule import Capacity, Request, fit, in_use

GIB = 1024**3


def req(key: str, cpus: float, memory: int = GIB, priority: int = 1) -> Request:
    return Request(key, Capacity.of(cpus, memory), priority)


def test_highest_priority_goes_first() -> None:
    chosen = fit([req("low", 1, priority=1), req("high", 1, priority=5)], Capacity.of(1, 8 * GIB))
    assert [r.key for r in chosen] == ["high"]


def test_small_work_backfills_around_what_does_not_fit() -> None:
    ready = [req("big", 2, priority=9), req("small", 0.5, priority=1)]
    assert [r.key for r in fit(ready, Capacity.of(1, 8 * GIB))] == ["small"]


def test_memory_is_a_limit_too() -> None:
    ready = [req("a", 0.1, 3 * GIB), req("b", 0.1, 3 * GIB)]
    assert [r.key for r in fit(ready, Capacity.of(4, 4 * GIB))] == ["a"]


def test_fractional_cpus_add_up_exactly() -> None:
    ready = [req(str(i), 0.1) for i in range(10)]
    assert len(fit(ready, Capacity.of(1, 100 * GIB))) == 10


requests = st.lists(
    st.builds(
        Request,
        key=st.uuids().map(str),
        need=st.builds(Capacity, st.integers(1, 4000), st.integers(1, 8 * GIB)),
        priority=st.integers(0, 10),
    ),
    max_size=40,
)


@given(requests, st.integers(0, 4000), st.integers(0, 8 * GIB))
def test_never_overcommits(ready: list[Request], cpus: int, memory: int) -> None:
    free = Capacity(cpus, memory)
    used = in_use(r.need for r in fit(ready, free))
    assert used.millicpus <= free.millicpus
    assert used.memory <= free.memory


@given(requests, st.integers(0, 4000), st.integers(0, 8 * GIB))
def test_whatever_is_left_out_would_not_fit(ready: list[Request], cpus: int, memory: int) -> None:
    free = Capacity(cpus, memory)
    chosen = fit(ready, free)
    left = free - in_use(r.need for r in chosen)
    for request in ready:
        if request not in chosen:
            assert not left.fits(request.need)
