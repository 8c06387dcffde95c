"""Images on a Docker Engine: inspect, pull, build, import, tag, find by label, remove."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker.errors

from dockyard.backends.docker_client import DockerClient, split_ref
from dockyard.errors import ImageError


class DockerImages(DockerClient):
    def image_id(self, ref: str) -> str | None:
        with self._translated(f"inspecting image {ref}"):
            try:
                return str(self.api.inspect_image(ref)["Id"])
            except docker.errors.NotFound:  # (ImageNotFound is one)
                return None

    def image_labels(self, ref: str) -> Mapping[str, str]:
        with self._translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return dict(config.get("Labels") or {})

    def image_command(self, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        with self._translated(f"inspecting image {ref}"):
            config = self.api.inspect_image(ref).get("Config") or {}
        return tuple(config.get("Entrypoint") or ()), tuple(config.get("Cmd") or ())

    def pull(self, ref: str) -> str:
        repository, tag = split_ref(ref)
        with self._translated(
            f"image {ref!r} is not present on this engine and could not be pulled", ImageError
        ):
            self.api.pull(repository, tag=tag)
        image = self.image_id(ref)
        if image is None:
            raise ImageError(f"image {ref!r} could not be pulled")
        return image

    def import_image(
        self,
        tarball: Path,
        tag: str,
        labels: Mapping[str, str],
        env: Mapping[str, str],
        command: Sequence[str],
    ) -> str:
        # Values quoted as the Dockerfile syntax wants them: "a b" is one value, not two.
        changes = [f"ENV {k}={json.dumps(v)}" for k, v in env.items()]
        changes += [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        changes.append(f"CMD {json.dumps(list(command))}")
        repository, version = split_ref(tag)
        with self._translated(f"importing {tag}", ImageError):
            self.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=changes
            )
        return self._made(tag, f"importing {tag}")

    def find_image(self, labels: Mapping[str, str]) -> str | None:
        with self._translated("listing images"):
            found = self.api.images(
                filters={"label": [f"{k}={v}" for k, v in labels.items()]}, quiet=True
            )
        return str(found[0]) if found else None

    def tag_image(self, image: str, ref: str) -> None:
        repository, version = split_ref(ref)
        with self._translated(f"tagging {image} as {ref}"):
            self.api.tag(image, repository, tag=version)

    def remove_image(self, image: str) -> bool:
        with self._translated(f"removing image {image}"):
            try:
                self.api.remove_image(image)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a container or another tag still uses it
                    return False
                raise
        return True

    def build(self, context: Path, tag: str, labels: Mapping[str, str]) -> str:
        log: list[str] = []
        with self._translated(f"building {context} as {tag} failed", ImageError):
            for chunk in self.api.build(
                path=str(context),
                tag=tag,
                labels=dict(labels),
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
            ):
                if "stream" in chunk:
                    log.append(str(chunk["stream"]))
                if "error" in chunk:
                    tail = "".join(log[-5:]).strip()
                    raise ImageError(
                        f"building {context} as {tag} failed: {chunk['error']}"
                        + (f"\n{tail}" if tail else "")
                    )
        return self._made(tag, f"building {context} as {tag}")

    def _made(self, tag: str, what: str) -> str:
        """The id of the image just made as ``tag``."""
        image = self.image_id(tag)
        if image is None:
            raise ImageError(f"{what} produced no image")
        return image
