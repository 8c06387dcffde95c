"""Where bytes and state live: the state store, committed outputs, named volumes, a run's
work folders. The run loop sees these as ports (:mod:`dockyard.storage.ports`); the
classes here are the local implementations, on the machine that runs dockyard."""
