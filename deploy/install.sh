#!/usr/bin/env bash
# Install dlforge into the current Python environment, the way each image needs it:
#   serve  the serving stack only (ONNX Runtime, no torch), then dlforge itself without its dependencies
#   train  torch from the PyTorch index for TORCH_VARIANT (cpu, cu126, cu128, ...; default cpu), then dlforge with
#          all its other dependencies
# Every version comes from deploy/constraints.txt (`-c`; regenerate with `make constraints`), torch's included.
# The Dockerfiles run this script and so does tests/test_deploy.py, so the images' install steps cannot rot.
# Usage: deploy/install.sh serve|train [SOURCE_DIR]
#   PYTHON picks the interpreter (default python3); TORCH_INDEX the index root (default download.pytorch.org/whl).
set -euo pipefail
kind=${1:?usage: install.sh serve|train [SOURCE_DIR]}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
py=${PYTHON:-python3}
constraints="$src/deploy/constraints.txt"
pip=("$py" -m pip install --no-cache-dir --disable-pip-version-check --quiet)
case "$kind" in
  serve)
    "${pip[@]}" -c "$constraints" -r "$src/deploy/requirements-serve.txt"
    "${pip[@]}" --no-deps "$src"
    ;;
  train)
    variant=${TORCH_VARIANT:-cpu}
    if [[ ! $variant =~ ^(cpu|cu[0-9]+|rocm[0-9.]+)$ ]]; then
      echo "error: TORCH_VARIANT '$variant' is not a PyTorch wheel variant (expected cpu, cu126, cu128, rocm6.4, ...)" >&2
      exit 2
    fi
    torch_pin=$(grep -E '^torch==' "$constraints") || { echo "error: no torch== pin in $constraints" >&2; exit 2; }
    # The variant's own index first (PyPI's Linux torch is a CUDA build); the second call finds torch installed,
    # `torch==X` in the constraints accepts its local label (X+cpu, X+cu128) under PEP 440, and torch's own
    # dependencies (sympy, networkx, ...) move to their pinned versions there.
    "${pip[@]}" --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl}/$variant" "$torch_pin"
    "${pip[@]}" -c "$constraints" "$src"
    ;;
  *)
    echo "error: unknown image kind '$kind' (expected serve or train)" >&2
    exit 2
    ;;
esac
