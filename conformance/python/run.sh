#!/usr/bin/env bash
# The second-language check: the golden vectors in conformance/vectors/ against Python.
#
# * spec_json_peer.py: the JSON framing written from docs/protocol.md with the standard
#   library alone; it also drives examples/python-runner's framing code. Run by the
#   system python3, so it cannot lean on anything installed here.
# * check_vectors.py: every valid vector decoded, compared as messages and re-encoded by
#   the official `protobuf` package (json_format and the binary runtime), with both of its
#   backends (upb, the default, and pure Python).
#
# The package goes into a virtualenv under target/, so nothing is installed system-wide.
# Run from anywhere: bash conformance/python/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# check_vectors.py imports spec_json_peer.py: leave no __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

PROTOBUF_VERSION=7.36.2
venv=target/python-conformance/venv
python=$venv/bin/python

if [ ! -x "$python" ]; then
  python3 -m venv "$venv"
fi
if ! "$python" -c "import sys, google.protobuf as p; sys.exit(p.__version__ != '$PROTOBUF_VERSION')" 2>/dev/null; then
  "$python" -m pip install --quiet --disable-pip-version-check "protobuf==$PROTOBUF_VERSION"
fi

status=0
python3 conformance/python/spec_json_peer.py || status=1
env -u PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION "$python" conformance/python/check_vectors.py || status=1
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "$python" conformance/python/check_vectors.py || status=1
exit "$status"
