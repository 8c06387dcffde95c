"""The orchestrator's state: the SQLite store (runs, instances, attempts, the cache), its
schema and migrations, the state folder and its lock, and the stat cache of input digests."""
