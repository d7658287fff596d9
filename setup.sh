#!/usr/bin/env bash
# Sets up histodetect on a fresh Debian/Ubuntu machine: system libraries for pyFAST and a
# Python virtual environment in .venv with the package, Snakemake and the test tools.
# Run as root, or as a user who may sudo; otherwise ask an administrator for:
#   libusb-1.0-0 pocl-opencl-icd libgl1 libopengl0 libegl1 chromium
set -euo pipefail
cd "$(dirname "$0")"

# chromium: tests/integration/test_report.py opens the report in a headless browser.
SYSTEM_PACKAGES=(libusb-1.0-0 pocl-opencl-icd libgl1 libopengl0 libegl1 chromium)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup.sh: please ask an administrator to install: ${missing[*]}" >&2; exit 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
pip_install() {
  .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || { tail -n 20 .venv/pip.log >&2; exit 1; }
}
# torch/torchvision pinned to the releases these machines carry on disk (any CUDA or CPU build works).
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[dev,slurm]"
.venv/bin/python -c "import histodetect, torch, torchvision, openslide, fast, timm, snakemake" >/dev/null 2>&1 \
  || { echo "setup.sh: the environment is incomplete (see pip's output above)" >&2; exit 1; }
echo "setup.sh: ready (.venv)"
