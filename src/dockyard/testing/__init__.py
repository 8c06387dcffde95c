"""Test support shipped with dockyard: a fake runtime and local test images."""

from dockyard.testing.fake import FakeRuntime, Fault

__all__ = ["FakeRuntime", "Fault"]
