"""Test support shipped with dockyard: a fake runtime, fakes of the storage ports and local
test images."""

from dockyard.testing.fake import FakeRuntime, Fault
from dockyard.testing.fake_storage import FakeOutputs, FakeWorkspace
from dockyard.testing.fake_volumes import FakeVolumes

__all__ = ["FakeOutputs", "FakeRuntime", "FakeVolumes", "FakeWorkspace", "Fault"]
