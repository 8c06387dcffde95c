"""``dockyard volume send`` / ``receive``: a snapshot, or the increment between two, as a
self-describing, verifiable byte stream; the building block for moving volumes between
hosts.

The stream comes from another machine and is not trusted: :mod:`.format` checks the shape
of every record before anything acts on it, and :mod:`.receive` builds the snapshot in a
scratch folder, through descriptors that never follow a link, and adopts it only once the
whole stream has checked out.
"""

from dockyard.disk.volume_stream.format import MAGIC, StreamError
from dockyard.disk.volume_stream.receive import receive
from dockyard.disk.volume_stream.send import send

__all__ = ["MAGIC", "StreamError", "receive", "send"]
