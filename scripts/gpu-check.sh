#!/usr/bin/env bash
# The GPU checks of issue 13, for a GPU machine with no network and no Bun (docs/gpu.md).
#
#   bash scripts/gpu-check.sh pack   (here, after scripts/setup.sh and a build) → .gpu-carry/: Bun
#                                     and NVRTC, each xz -9 (38 + 17 MB), the stripped kernel
#                                     libraries (3 MB) and the stripped emulator builds (5 MB):
#                                     carry ".gpu-carry" alone (about 61 MB of the 64 MiB limit)
#   bash scripts/gpu-check.sh run    (on the GPU machine) → unpacks them, prints the driver,
#                                     runs the CUDA tests and bench/cuda.bench.ts; logs to $OUT
#                                     (or .gpu-carry/out) as well as stdout
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu-carry
case "${1:-}" in
pack)
  mkdir -p "$carry"
  bun_bin=node_modules/bun/bin/bun.exe
  [ -f "$bun_bin" ] || bun_bin=$(readlink -f node_modules/.bin/bun)
  xz -9 -T2 -c "$bun_bin" > "$carry/bun.xz"
  if [ -f .tools/nvrtc/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 ]; then
    tar -C .tools/nvrtc -cf - nvidia/cuda_nvrtc/lib | xz -9 -T2 > "$carry/nvrtc.tar.xz"
  fi
  # kiln's one runtime dependency (chat templates), which src/index.ts imports.
  tar -cf - node_modules/@huggingface/jinja | xz -9 > "$carry/jinja.tar.xz"
  bash scripts/build-cuda-emu.sh
  rm -rf "$carry/lib" && mkdir -p "$carry/lib"
  cp zig-out/prebuilt/linux-x64/libkiln-x86_64-*.so "$carry/lib/"
  for f in zig-out/lib/libkiln-cuda-emu-*.so; do strip -o "$carry/lib/$(basename "$f")" "$f"; done
  du -ch "$carry"/* | tail -1
  echo "carry: $carry (run: bash scripts/gpu-check.sh run)"
  ;;
run)
  out=${OUT:-$carry/out}
  mkdir -p "$out" .tools/bin
  exec > >(tee "$out/gpu-check.log") 2>&1
  xz -dc "$carry/bun.xz" > .tools/bin/bun && chmod +x .tools/bin/bun
  mkdir -p zig-out/lib && cp "$carry"/lib/*.so zig-out/lib/
  xz -dc "$carry/jinja.tar.xz" | tar -xf -
  export PATH="$PWD/.tools/bin:$PATH"
  if [ -f "$carry/nvrtc.tar.xz" ]; then
    mkdir -p .tools/nvrtc && xz -dc "$carry/nvrtc.tar.xz" | tar -C .tools/nvrtc -xf -
  fi
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || echo "nvidia-smi failed"
  nvidia-smi | grep -m1 "CUDA Version" || true
  echo "== probe"
  bun -e 'import("./src/backends/cuda/driver").then(m => console.log(JSON.stringify(m.probeCuda())))'
  echo "== CUDA tests (emulator and GPU)"
  # The real-model test needs models/*.gguf, which do not fit in the carry (98 + 253 MB): it runs
  # where they are present and says it is skipped otherwise.
  KILN_CUDA_EMU_NO_BUILD=1 bun test --timeout 600000 test/cuda test/backends 2>&1 | grep -v "^(pass)" | tail -80 || true
  echo "== bench: TinyLlama shape Q4_0, Q4_K_M"
  bun bench/cuda.bench.ts --shape tinyllama --type q4_0 || true
  bun bench/cuda.bench.ts --shape tinyllama --type q4_k_m || true
  echo "== bench: Llama-2-7B shape Q4_0"
  bun bench/cuda.bench.ts --shape llama2-7b --type q4_0 --prompt 4096 || true
  ;;
*)
  echo "usage: bash scripts/gpu-check.sh pack|run" >&2
  exit 2
  ;;
esac
