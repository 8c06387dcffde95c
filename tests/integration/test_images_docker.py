"""Images made from Debian packages on the real engine: a recipe that cannot be made."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.cli import main
from tests.conftest import WritePipeline

pytestmark = pytest.mark.docker


@pytest.mark.timeout(300)
def test_a_package_that_does_not_exist_stops_the_build_with_debootstraps_words(
    write_pipeline: WritePipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    docker_runtime: object,
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    path = write_pipeline(
        """
        version: 1
        name: bad-image
        images:
          nope:
            debian: {include: [no-such-package-dockyard]}
            tag: dockyard-test/nope:1
        steps:
          a: {image: {ref: nope}, command: "true"}
        """
    )
    assert main(["build", "-f", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "images.nope: debootstrap of" in err
    assert "Couldn't find these debs: no-such-package-dockyard" in err
    assert "Traceback" not in err
    assert list((home / "build").iterdir()) == []  # the scratch folder is gone
    from dockyard.runtime.docker import DockerRuntime

    assert isinstance(docker_runtime, DockerRuntime)
    assert docker_runtime.image_id("dockyard-test/nope:1") is None

    # `run` resolves images before it starts anything: same refusal, no run recorded.
    assert main(["run", "-f", str(path)]) == 2
    assert "no-such-package-dockyard" in capsys.readouterr().err
    assert main(["status", "-f", str(path)]) == 2
    assert "no run" in capsys.readouterr().err
