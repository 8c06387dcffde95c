"""The images a pipeline needs: found, pulled, built from a Dockerfile, or made from
Debian packages without a registry."""
