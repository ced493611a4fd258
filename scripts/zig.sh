#!/usr/bin/env bash
# Runs the project-pinned Zig (installed by scripts/setup.sh from PyPI into .tools/zig).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="$root/.tools/zig${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m ziglang "$@"
