"""An input is resolved again when its container is made: the folder may have changed."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockyard.backends.local.ports import local_ports
from dockyard.errors import PlanError
from dockyard.execution import Executor, RunOptions
from dockyard.runtime.base import ContainerSpec
from dockyard.spec import load_pipeline
from dockyard.state.hashing import InputHasher, NotData
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime
from tests.conftest import WritePipeline


@dataclass
class Recording(FakeRuntime):
    specs: list[ContainerSpec] = field(default_factory=list)

    def create(self, spec: ContainerSpec) -> str:
        self.specs.append(spec)
        return super().create(spec)


@pytest.mark.parametrize("target", ["/etc", ".dockyard"])
def test_an_input_that_became_a_way_out_after_the_check_is_not_mounted(
    target: str, write_pipeline: WritePipeline, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    path = write_pipeline(
        """
        version: 1
        name: swapped
        steps:
          a: {image: busybox:1.36, command: "true", inputs: {data: ./data}}
        """
    )
    pf = load_pipeline(path)
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").symlink_to(target)
    runtime = Recording()
    runtime.add_image("busybox:1.36")
    store = Store(pf.state_dir / "state.db")
    try:
        with pytest.raises(PlanError, match=r"escapes the pipeline file's folder|state folder"):
            Executor(
                pf,
                runtime,
                store,
                ports=local_ports(pf),
                options=RunOptions(),
                new_id=lambda: "run1",
            ).run()
    finally:
        store.close()
    mounted = {Path(b.source).resolve() for s in runtime.specs for b in s.binds}
    assert Path("/etc") not in mounted and pf.state_dir.resolve() not in mounted


def test_an_input_swapped_for_a_fifo_after_the_check_is_refused_not_read(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "data.txt"
    os.mkfifo(fifo)
    hasher = InputHasher(Store(tmp_path / "state.db"))
    with pytest.raises(NotData):
        hasher.digest(fifo)  # (opening it to read would block until a writer came)
