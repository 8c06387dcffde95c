"""The local backend: the Docker Engine on this machine, and files on this machine."""
