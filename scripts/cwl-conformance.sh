#!/usr/bin/env bash
# Run the CWL conformance suite with dockyard as the runner.
#
#   scripts/cwl-conformance.sh SUITE_DIR [cwltest arguments, e.g. --tags required]
#
# SUITE_DIR is a checkout of https://github.com/common-workflow-language/cwl-v1.2. The
# four images its tests name are made first, offline, from Debian packages
# (scripts/cwl-conformance/images.yaml). Badges and a JUnit file go to
# $CWL_CONFORMANCE_OUT (default: ./cwl-conformance), with the per-tag table results.md.
# The exit status is cwltest's (1 when a test failed). Needs `scripts/setup.sh` (which
# installs dockyard with its `cwl` extra).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=$(cd "${1:?usage: $0 SUITE_DIR [cwltest arguments]}" && pwd)
shift
out=$(mkdir -p "${CWL_CONFORMANCE_OUT:-cwl-conformance}" && cd "${CWL_CONFORMANCE_OUT:-cwl-conformance}" && pwd)
bin=$here/.venv/bin
export DOCKYARD_CWL_IMAGES=$here/scripts/cwl-conformance/images.yaml
echo "cwl-conformance: making the suite's images (once)" >&2
"$bin/dockyard-cwl" --make-images >/dev/null
rm -rf "$out/badges"  # (cwltest makes it, and refuses one that exists)
cd "$suite"
status=0
"$bin/cwltest" --test conformance_tests.yaml --tool "$bin/dockyard-cwl" \
  -j "${CWL_CONFORMANCE_JOBS:-2}" --badgedir "$out/badges" --junit-xml "$out/junit.xml" "$@" \
  || status=$?
"$bin/python" "$here/scripts/cwl-conformance/table.py" "$out/badges" | tee "$out/results.md"
exit "$status"
