#!/usr/bin/env bash
# Prepare a fresh Debian machine for dockyard: Docker Engine (Debian's docker.io),
# a running dockerd, debootstrap, Node.js (for CWL's JavaScript), a virtualenv with
# dockyard and its dev and cwl extras installed, and the local
# busybox image that the tests use (no container registry is needed; the genomics
# example's images are made from Debian packages by `dockyard run` on first use).
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v docker >/dev/null 2>&1 || need_pkgs+=(docker.io)
# The examples' image is made from Debian's static busybox (see dockyard/testing/images.py).
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
# The local Swarm of the tests (scripts/swarm-local.sh) wires its nodes with iproute2.
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
# The genomics example's images are made from Debian packages with debootstrap.
[ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
# The tests render `dockyard report` pages in headless Chromium, run a SQLite service, and
# compare the genomics example's variant calls with the same tools run on the host.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
for tool in bwa samtools bcftools; do
  command -v "$tool" >/dev/null 2>&1 || need_pkgs+=("$tool")
done
# CWL documents' JavaScript expressions are evaluated by Node.js (cwltool runs `node`).
command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1 || need_pkgs+=(nodejs)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]} from Debian" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! as_root docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd (log: /var/log/dockyard-dockerd.log)" >&2
  as_root sh -c 'nohup dockerd >/var/log/dockyard-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    as_root docker info >/dev/null 2>&1 && break
    sleep 1
  done
  as_root docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/dockyard-dockerd.log" >&2; exit 1; }
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: dockyard needs Python 3.11 or newer ($python is older)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,cwl]'
.venv/bin/python -m dockyard.testing.images >/dev/null
echo "setup: ready (dockyard $(.venv/bin/dockyard --version | awk '{print $NF}'))" >&2
