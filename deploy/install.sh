#!/usr/bin/env bash
# Install dlforge into the current Python environment, the way each image needs it:
#   serve  the serving stack only (ONNX Runtime, no torch), then dlforge itself without its dependencies
#   train  dlforge with all its dependencies (torch, ...)
# The Dockerfiles run this script and so does tests/test_deploy.py, so the images' install steps cannot rot.
# Usage: deploy/install.sh serve|train [SOURCE_DIR]   (PYTHON picks the interpreter; default python3)
set -euo pipefail
kind=${1:?usage: install.sh serve|train [SOURCE_DIR]}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
py=${PYTHON:-python3}
pip=("$py" -m pip install --no-cache-dir --disable-pip-version-check --quiet)
case "$kind" in
  serve)
    "${pip[@]}" -r "$src/deploy/requirements-serve.txt"
    "${pip[@]}" --no-deps "$src"
    ;;
  train)
    "${pip[@]}" "$src"
    ;;
  *)
    echo "error: unknown image kind '$kind' (expected serve or train)" >&2
    exit 2
    ;;
esac
