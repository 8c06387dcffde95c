"""The node agent's image, made without a registry: Debian's ``python3`` from dockyard's
Debian image builder, plus one layer with the agent's modules
(:data:`~dockyard.agent.SHIPPED`) and the wheels of the one library they use beside the
standard library, pydantic (which checks the volume streams that arrive from other nodes),
downloaded by ``pip`` for the image's Python
and kept under the data root. Its tag names its content: a changed agent is a new image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.agent import SHIPPED
from dockyard.errors import ImageError
from dockyard.home import data_root
from dockyard.images import debian, debian_build

if TYPE_CHECKING:
    from dockyard.backends.swarm.runtime import SwarmRuntime

REPOSITORY = "dockyard/agent"
BASE_REPOSITORY = "dockyard/agent-base"
LABEL = "dockyard.agent"
PYTHON_LABEL = "dockyard.agent.python"
PACKAGES = ("python3",)
CODE_DIR = "/opt/dockyard"
# pydantic and what it needs, at the versions this machine has (pinned in pyproject.toml)
WHEELS = ("pydantic", "pydantic-core", "typing-extensions", "annotated-types", "typing-inspection")
PLATFORMS = {"amd64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}

Note = Callable[[str], None]


def agent_sources() -> dict[str, bytes]:
    """What the agent's image holds of dockyard, by path under the package, as it is."""
    package = Path(__file__).resolve().parents[2]
    files: dict[str, bytes] = {}
    for rel in SHIPPED:
        path = package / rel
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            files[source.relative_to(package).as_posix()] = source.read_bytes()
    return files


def wheel_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in WHEELS}


def _code_layer(files: Mapping[str, bytes], libraries: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entries = {f"dockyard/{rel}": data for rel, data in files.items()}
        entries.update(libraries)
        for rel, data in sorted(entries.items()):
            info = tarfile.TarInfo(f"{CODE_DIR.lstrip('/')}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _libraries(python: str, arch: str, note: Note) -> dict[str, bytes]:
    """The wheels' files for ``python`` (``3.11``) on ``arch``, by path under CODE_DIR."""
    platform = PLATFORMS.get(arch)
    if platform is None:
        raise ImageError(f"the node agent's image is made for amd64 and arm64, not {arch}")
    cache = data_root() / "cache" / "agent-wheels" / f"cp{python.replace('.', '')}-{arch}"
    wanted = [f"{name}=={version}" for name, version in wheel_versions().items()]
    wheels = sorted(cache.glob("*.whl")) if cache.is_dir() else []
    if len(wheels) != len(wanted) or not _match(wheels, wanted):
        note(f"agent: downloading {', '.join(wanted)} for Python {python} (pip, once)")
        cache.mkdir(parents=True, exist_ok=True)
        for old in wheels:
            old.unlink()
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--no-deps", "--implementation", "cp",
            "--python-version", python, "--platform", platform, "--dest", str(cache), *wanted,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(
                "could not download pydantic for the node agent's image: "
                + (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            )
        wheels = sorted(cache.glob("*.whl"))
    files: dict[str, bytes] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if not member.is_dir() and ".." not in member.filename.split("/"):
                    files[member.filename] = archive.read(member)
    return files


def _match(wheels: list[Path], wanted: list[str]) -> bool:
    found = {w.name.split("-")[0].lower().replace("_", "-") + "==" + w.name.split("-")[1]
             for w in wheels}  # fmt: skip
    return found == {entry.lower() for entry in wanted}


def agent_image(runtime: SwarmRuntime, note: Note) -> str:
    """The agent's image on the manager (made when it lacks it); its reference."""
    recipe = debian.Recipe(debian.host_suite(), debian.host_arch(), PACKAGES)
    files = agent_sources()
    digest = hashlib.sha256(recipe.digest.encode())
    for rel, data in sorted(files.items()):
        digest.update(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    digest.update(repr(sorted(wheel_versions().items())).encode())
    tag = f"{REPOSITORY}:{digest.hexdigest()[:16]}"
    if runtime.image_id(tag) is not None:
        return tag
    base = f"{BASE_REPOSITORY}:{recipe.digest[:16]}-2"
    if runtime.image_id(base) is None:
        note(f"agent: making its image ({recipe.describe()})")
        root = data_root()
        with debian_build.Workdir(root / "build") as work:
            made = debian_build.bootstrap_tarball(
                recipe, debian.debian_mirror(recipe.suite), work, root / "cache" / "debian", note
            )
            python = ".".join(made.packages["python3"].split(".")[:2])
            runtime.import_image(
                made.tarball, base, {PYTHON_LABEL: python}, debian_build.IMAGE_ENV, ["python3"]
            )
    api: Any = runtime.api
    with runtime._translated("adding the agent to its image", ImageError):
        python = str(api.inspect_image(base)["Config"]["Labels"][PYTHON_LABEL])
    layer = _code_layer(files, _libraries(python, recipe.arch, note))
    with runtime._translated("adding the agent to its image", ImageError):
        holder = api.create_container(base, command=["true"])["Id"]
        try:
            api.put_archive(holder, "/", layer)
            repository, version = tag.split(":")
            api.commit(
                holder,
                repository=repository,
                tag=version,
                conf={
                    "Cmd": ["python3", "-m", "dockyard.agent"],
                    "Env": [
                        *(f"{k}={v}" for k, v in debian_build.IMAGE_ENV.items()),
                        f"PYTHONPATH={CODE_DIR}",
                        "PYTHONDONTWRITEBYTECODE=1",
                        "PYTHONUNBUFFERED=1",
                    ],
                    "Labels": {LABEL: "image"},
                },
            )
        finally:
            api.remove_container(holder, force=True)
    return tag


__all__ = ["CODE_DIR", "agent_image", "agent_sources", "wheel_versions"]
