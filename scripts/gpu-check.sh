#!/usr/bin/env bash
# The checks for a device machine (a GPU, no network, no Bun): the CUDA backend's GPU half and
# its benchmark, plus the host CPU's own paths (AMX / AVX512-BF16 when its CPU has them), which
# a 2-core CI machine may never meet. docs/gpu.md.
#
#   bash scripts/gpu-check.sh pack   (here, after scripts/setup.sh) → .gpu-carry/: Bun and NVRTC
#                                     (xz -9: 38 + 17 MB), the stripped x86-64 kernel libraries,
#                                     the CUBINs precompiled for sm_90 (a cache the device reuses
#                                     when its driver reports CUDA_DRIVER, default 13000, else it
#                                     compiles them itself), the AMX kernel's Zig test binary and
#                                     probe (zig-kernels/amx_probe.zig),
#                                     the one runtime dependency; carry ".gpu-carry" alone
#   bash scripts/gpu-check.sh run    (on the device machine) → unpacks them; prints the CPU and
#                                     the driver; runs the GPU half of test/cuda and
#                                     test/backends (KILN_CUDA_TESTS=gpu: CI runs the emulator
#                                     half), bench/cuda.bench.ts, and the CPU checks; every step
#                                     under its own timeout; logs to $OUT (or .gpu-carry/out)
#   bash scripts/gpu-check.sh pack-cpu / run-cpu   the same for the host CPU alone, against
#                                     llama.cpp's CPU build: AMX tests, AMX vs VNNI matmul, and
#                                     bench/e2e.bench.ts (KILN_DEVICE=cpu) on synthetic models
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu-carry

# ---- here: what both carries hold -------------------------------------------------------------
# Bun, kiln's one runtime dependency (chat templates, imported by src/index.ts), the stripped
# x86-64 kernel libraries, and the AMX kernel's Zig tests and probe for the host CPU.
pack_common() {
  rm -rf "$carry" && mkdir -p "$carry/lib"
  local bun_bin=node_modules/bun/bin/bun.exe
  [ -f "$bun_bin" ] || bun_bin=$(readlink -f node_modules/.bin/bun)
  xz -9 -T2 -c "$bun_bin" > "$carry/bun.xz"
  tar -cf - node_modules/@huggingface/jinja | xz -9 > "$carry/jinja.tar.xz"
  for f in zig-out/lib/libkiln-x86_64-*.so; do strip -o "$carry/lib/$(basename "$f")" "$f"; done
  bash scripts/zig.sh test zig-kernels/amx.zig -O ReleaseSafe -mcpu=x86_64_v4+avx512vnni --test-no-exec -femit-bin="$carry/amx-test"
  bash scripts/zig.sh build-exe zig-kernels/amx_probe.zig -O ReleaseFast -mcpu=x86_64_v4+avx512vnni -femit-bin="$carry/amx-probe"
  rm -f "$carry"/*.o
  strip "$carry/amx-test" "$carry/amx-probe" && xz -9 "$carry/amx-test" "$carry/amx-probe"
}

# ---- there: unpacking, timed steps, the host CPU's checks --------------------------------------
unpack_common() { # $1: the log's name
  out=${OUT:-$carry/out}
  mkdir -p "$out" .tools/bin models/synthetic
  exec > >(tee "$out/$1") 2>&1
  set +e
  xz -dc "$carry/bun.xz" > .tools/bin/bun && chmod +x .tools/bin/bun
  mkdir -p zig-out/lib && cp "$carry"/lib/*.so zig-out/lib/
  xz -dc "$carry/jinja.tar.xz" | tar -xf -
  export PATH="$PWD/.tools/bin:$PATH"
  echo "== $(date -u +%FT%TZ) $(hostname); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); family/model $(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2)/$(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2)"
  grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx|avx512_bf16|avx512_vnni|avx512_fp16|avx512f$)' | tr '\n' ' '; echo
}
step() { local t=$1; shift; echo; echo "== $(date -u +%T) $* (timeout ${t}s)"; timeout "$t" "$@"; echo "-- exit $?"; }
# The AMX kernel against its emulation (Zig tests), its speed (probe), AMX vs VNNI on a matmul.
cpu_checks() {
  for t in amx-test amx-probe; do xz -dc "$carry/$t.xz" > "/tmp/$t" && chmod +x "/tmp/$t"; done
  step 60 /tmp/amx-test 2>&1 | grep -v '\.\.\.OK$'
  step 90 /tmp/amx-probe
  cp zig-out/lib/libkiln-x86_64-v4.so /tmp/libkiln-b.so
  for amx in 0 1; do KILN_AMX=$amx M=128 T=2 step 90 bun bench/matmul-ab.ts zig-out/lib/libkiln-x86_64-v4.so /tmp/libkiln-b.so q4_0,q4_1,q4_k,q6_k,q8_0 2048x2048; done
}

case "${1:-}" in
pack)
  pack_common
  tar -C .tools/nvrtc -cf - nvidia/cuda_nvrtc/lib | xz -9 -T2 > "$carry/nvrtc.tar.xz"
  KILN_CACHE_DIR="$carry/cubin" node_modules/.bin/bun -e '
    import { compileKernelFile, CUDA_DIR } from "./src/backends/cuda/compile";
    import { readdirSync } from "node:fs";
    const driverVersion = Number(process.env.CUDA_DRIVER ?? 13000);
    for (const f of readdirSync(CUDA_DIR).filter((f) => f.endsWith(".cu"))) compileKernelFile(f, 90, { driverVersion });'
  bash scripts/zig.sh test zig-kernels/bf16.zig -O ReleaseSafe -mcpu=x86_64_v4+avx512vnni --test-no-exec -femit-bin="$carry/bf16-test"
  rm -f "$carry"/*.o
  strip "$carry/bf16-test" && xz -9 "$carry/bf16-test"
  du -ch "$carry"/* | tail -1
  echo "carry: $carry (run: bash scripts/gpu-check.sh run)"
  ;;
run)
  unpack_common gpu-check.log
  mkdir -p .tools/nvrtc && xz -dc "$carry/nvrtc.tar.xz" | tar -C .tools/nvrtc -xf -
  export KILN_CACHE_DIR="$PWD/$carry/cubin"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  nvidia-smi | grep -m1 "CUDA Version"
  step 30 bun -e 'import("./src/backends/cuda/driver").then(m => console.log(JSON.stringify(m.probeCuda())))'
  step 30 bun -e 'import("./src/ffi/library").then(m => console.log(JSON.stringify({ level: m.loadedLevel?.(), cpu: m.cpuInfo(), amx: m.amxStatus(), bf16: m.bf16Status() })))'
  # The GPU half of every CUDA test file (the emulator half runs in CI).
  # (emulator.test.ts tests the emulator alone, fake-driver.test.ts a fake libcuda: CI runs both.)
  KILN_CUDA_TESTS=gpu step ${GPU_TEST_S:-240} bun test --timeout 120000 test/cuda/compile.test.ts test/cuda/elementwise.test.ts test/cuda/copy-kv.test.ts test/cuda/matmul.test.ts test/cuda/attention.test.ts test/cuda/model.test.ts test/cuda/real-models.test.ts test/backends test/cuda/device-option.test.ts 2>&1 | grep -v "^(pass)" | tail -150
  bench() { step 90 bun bench/cuda.bench.ts --shape "$1" --type "$2" --prompt "$3"; }
  bench tinyllama q4_0 512
  # The host CPU's own paths (a GPU machine's host is often an AMX Xeon).
  cpu_checks
  xz -dc "$carry/bf16-test.xz" > /tmp/bf16-test && chmod +x /tmp/bf16-test && step 60 /tmp/bf16-test 2>&1 | grep -v '\.\.\.OK$'
  step 60 bun test test/prefill-paths.test.ts
  bench tinyllama q4_k_m 512
  bench llama2-7b q4_0 512
  bench llama2-7b q4_0 4096
  echo "== $(date -u +%T) done"
  ;;
pack-cpu)
  # The device machine's host CPU against llama.cpp (no GPU work): node-llama-cpp's CPU build and
  # its dependencies beside the common carry (xz -9: ~6 MB; the CUDA build and NVRTC stay behind,
  # they would not fit beside it).
  pack_common
  deps=$(node_modules/.bin/bun -e '
    const lock = (await Bun.file("package-lock.json").json()).packages;
    const seen = new Set();
    const walk = (n) => { const p = lock["node_modules/" + n]; if (!p || seen.has(n)) return; seen.add(n); for (const d of Object.keys(p.dependencies ?? {})) walk(d); };
    walk("node-llama-cpp"); seen.delete("node-llama-cpp");
    console.log([...seen].map((n) => "node_modules/" + n).join("\n"));')
  { echo "$deps"; ls -d node_modules/node-llama-cpp/* node_modules/node-llama-cpp/llama/* | grep -v -e '/llama$' -e gitRelease.bundle; echo node_modules/@node-llama-cpp/linux-x64; } \
    | tar -cf - -T - | xz -9 -T2 > "$carry/llama.tar.xz"
  du -ch "$carry"/* | tail -1
  echo "carry: $carry (run: bash scripts/gpu-check.sh run-cpu)"
  ;;
run-cpu)
  unpack_common cpu-check.log
  xz -dc "$carry/llama.tar.xz" | tar -xf -
  # The CPU benchmarks load kiln with device "cpu" themselves; this keeps anything else off the GPU.
  export KILN_DEVICE=cpu
  cpu_checks
  step 90 bun -e '
    import { writeSyntheticModel } from "./src/tools/synthetic-model";
    writeSyntheticModel("models/synthetic/smollm2-shape-q4_1.gguf", { arch: "llama", type: "q4_1", shape: { nEmbd: 576, nLayer: 30, nHead: 9, nHeadKv: 3, nFf: 1536, nVocab: 49152 }, seed: 2 });
    writeSyntheticModel("models/synthetic/tinyllama-q4_0.gguf", { arch: "llama", type: "q4_0", shape: "tinyllama", seed: 1 });
    writeSyntheticModel("models/synthetic/tinyllama-q8_0.gguf", { arch: "llama", type: "q8_0", shape: "tinyllama", seed: 3 });'
  models="--model models/synthetic/smollm2-shape-q4_1.gguf --model models/synthetic/tinyllama-q4_0.gguf --model models/synthetic/tinyllama-q8_0.gguf"
  for amx in 1 0; do KILN_AMX=$amx step 300 bun bench/e2e.bench.ts --threads 2 --prompt-tokens 512 --decode-tokens 32 --reps 3 $models; done
  cp bench/results/e2e-*.json "$out/" 2>/dev/null
  echo "== $(date -u +%T) done"
  ;;
*)
  echo "usage: bash scripts/gpu-check.sh pack|run|pack-cpu|run-cpu" >&2
  exit 2
  ;;
esac
