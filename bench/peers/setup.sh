#!/usr/bin/env bash
# Makes bench/peers/.venv for bench/peers.py: histodetect (editable, from this checkout) beside the
# libraries users pick for the same jobs. The peers are never histodetect dependencies. A peer that
# does not install is written to .venv/peers_failed.txt with pip's error line; the bench gives that
# line in its rows and goes on.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
PYTHON=${PYTHON:-python3}
[[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
pip() { "$venv/bin/python" -m pip install -q --only-binary=:all: "$@" >>"$venv/pip.log" 2>&1; }
# torch/torchvision pinned as in ../../setup.sh (the releases these machines carry on disk)
pip "torch==2.14.1" "torchvision==0.29.1" || { tail -n 20 "$venv/pip.log" >&2; exit 1; }
"$venv/bin/python" -m pip install -q -e "$repo" >>"$venv/pip.log" 2>&1 || { tail -n 20 "$venv/pip.log" >&2; exit 1; }
printf 'torch==2.14.1\ntorchvision==0.29.1\n' >"$venv/constraints.txt"
: >"$venv/peers_failed.txt"
failed() {  # failed NAME: NAME and the last error line of its pip call into peers_failed.txt
  local why
  why=$(grep -E '^ERROR' "$venv/pip.last" | tail -n 1 || true)
  printf '%s\t%s\n' "$1" "${why:-$(tail -n 1 "$venv/pip.last")}" >>"$venv/peers_failed.txt"
  echo "setup.sh: $1 did not install: ${why:-see $venv/pip.log}" >&2
}
peer() {  # peer NAME PIP-ARGS...: one pip call per peer, torch held at its pin
  if "$venv/bin/python" -m pip install -q --only-binary=:all: -c "$venv/constraints.txt" "${@:2}" \
    >"$venv/pip.last" 2>&1; then echo "setup.sh: $1 installed"; else failed "$1"; fi
  cat "$venv/pip.last" >>"$venv/pip.log"
}
peer imagecodecs imagecodecs
peer tiffslide tiffslide
peer fastslide fastslide
peer wsinfer wsinfer
peer lazyslide lazyslide
# hs2p: tissue (HSV or Otsu on a thumbnail) and tiles in physical units; cuCIM: batched reads
# (its CPU path without a GPU); microtome-wsi: a Rust SVS reader decoding tiles in parallel
peer hs2p hs2p
peer cucim cucim-cu12
peer microtome-wsi microtome-wsi
# histolab 0.7.0 pins numpy<=1.24.4, scipy<1.10.1 and scikit-image<0.19.4 (no Python 3.11 wheel),
# TIAToolbox 2.1.3 pins torch<2.13: both go in without their pins, beside current releases of
# what they import (bench/peers.py says so in its notes).
unpinned() {  # unpinned NAME SPEC DEPS...: the package without its dependencies, then those
  peer "$1" --no-deps "$2"
  "$venv/bin/python" -m pip install -q --only-binary=:all: -c "$venv/constraints.txt" "${@:3}" \
    >"$venv/pip.last" 2>&1 || failed "$1"
  cat "$venv/pip.last" >>"$venv/pip.log"
}
unpinned histolab histolab==0.7.0 certifi scikit-image
unpinned tiatoolbox tiatoolbox==2.1.3 dask defusedxml glymur huggingface_hub joblib numba \
  opencv-python-headless scikit-image scikit-learn SimpleITK tqdm umap-learn wsidicom zarr \
  requests shapely pyyaml
"$venv/bin/python" -c "import histodetect, torch, openslide, fast, timm" >/dev/null 2>&1 \
  || { echo "setup.sh: a peer broke histodetect's own imports (see $venv/pip.log)" >&2; exit 1; }
echo "setup.sh: ready ($venv)"
