"""Where a pipeline runs: one folder per backend (:mod:`.local`, :mod:`.swarm`), the
Docker Engine API code both use, and :mod:`.choice`, which turns a backend's name into its
runtime and ports."""
