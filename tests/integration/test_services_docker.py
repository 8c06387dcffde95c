"""A database service beside the steps (issue 4): rows written by steps survive runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.backends.local.runtime import DockerRuntime
from dockyard.cli import main
from dockyard.runtime.base import LABEL_PIPELINE
from dockyard.testing.images import SQLITE_IMAGE, ensure_sqlite_image
from tests.conftest import BUSYBOX_IMAGE, committed_output

pytestmark = pytest.mark.docker

# SQLite behind a small server: busybox httpd with one CGI program in front of a real
# SQLite database, whose file lives in a named volume.
ROWS_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
db() { sqlite3 -cmd ".timeout 10000" /data/rows.db "$1"; }
db "CREATE TABLE IF NOT EXISTS rows (sample TEXT NOT NULL)"
if [ "$REQUEST_METHOD" = POST ]; then
  body=$(head -c "$CONTENT_LENGTH")
  case "$body" in *[!a-z0-9-]*|"") echo "bad row"; exit 0;; esac
  db "INSERT INTO rows VALUES ('$body')" && echo stored
else
  db "SELECT sample FROM rows ORDER BY sample"
fi
"""

PIPELINE = """
version: 1
name: {name}
images:
  rowstore: {{build: ./rowstore}}
volumes:
  dbdata: {{}}
services:
  db:
    image: {{ref: rowstore}}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumes: {{dbdata: /data}}
    healthcheck:
      command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/cgi-bin/rows"]
      interval: 200ms
      retries: 50
    resources: {{cpus: 0.25, memory: 32m}}
steps:
  load:
    image: "{image}"
    scatter: {{sample: [a, b, c]}}
    services: [db]
    resources: {{cpus: 0.25, memory: 16m}}
    command: "wget -q -O - --post-data 'sample-${{sample}}' http://db:8080/cgi-bin/rows"
  summary:
    image: "{image}"
    needs: [load]
    services: [db]
    resources: {{cpus: 0.25, memory: 16m}}
    command: "wget -q -O - http://db:8080/cgi-bin/rows | sort > /out/rows.txt"
"""


def test_steps_write_rows_to_a_database_service_that_keeps_them_across_runs(
    tmp_path: Path,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    context = tmp_path / "rowstore"
    (context / "www" / "cgi-bin").mkdir(parents=True)
    (context / "www" / "cgi-bin" / "rows").write_text(ROWS_CGI)
    (context / "www" / "cgi-bin" / "rows").chmod(0o755)
    ensure_sqlite_image(docker_runtime.api)
    (context / "Dockerfile").write_text(f"FROM {SQLITE_IMAGE}\nCOPY www /www\n")
    path = tmp_path / "dockyard.yaml"
    path.write_text(PIPELINE.format(name=pipeline_name, image=BUSYBOX_IMAGE))
    try:
        assert main(["run", "-f", str(path)]) == 0, capsys.readouterr()
        rows = (committed_output(path, "summary", capsys) / "rows.txt").read_text()
        assert rows == "sample-a\nsample-b\nsample-c\n"
        assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
        assert docker_runtime.networks({LABEL_PIPELINE: pipeline_name}) == []

        # The next run (loading again) finds the first run's rows in the service's volume.
        assert main(["run", "-f", str(path), "--no-cache"]) == 0
        rows = (committed_output(path, "summary", capsys) / "rows.txt").read_text()
        assert rows.splitlines() == sorted(["sample-a", "sample-b", "sample-c"] * 2)
    finally:
        for image in docker_runtime.api.images(name=f"dockyard/{pipeline_name}-rowstore"):
            docker_runtime.api.remove_image(image["Id"], force=True)


def test_a_service_failing_its_health_check_fails_its_steps_with_a_message(
    tmp_path: Path,
    pipeline_name: str,
    docker_runtime: DockerRuntime,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    path = tmp_path / "dockyard.yaml"
    path.write_text(f"""
version: 1
name: {pipeline_name}
services:
  db:
    image: "{BUSYBOX_IMAGE}"
    command: "sleep 60"
    healthcheck: {{command: "false", interval: 200ms, retries: 2}}
steps:
  use: {{image: "{BUSYBOX_IMAGE}", services: [db], command: "true"}}
""")
    assert main(["run", "-f", str(path)]) == 1
    output = " ".join(capsys.readouterr().out.split())
    assert "service 'db' failed its health check" in output
    assert docker_runtime.list({LABEL_PIPELINE: pipeline_name}) == []
    assert docker_runtime.networks({LABEL_PIPELINE: pipeline_name}) == []
