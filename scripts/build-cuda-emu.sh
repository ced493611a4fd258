#!/usr/bin/env bash
# Builds the host emulator of the CUDA kernels: each cuda/<stem>.cu (and each test-only
# cuda/emu/<stem>.cu) together with cuda/emu/emu.cpp into
#   zig-out/lib/libkiln-cuda-emu-<stem>.so       (cuda/emu/<stem>.cu: libkiln-cuda-emu-emu-<stem>.so)
# which src/backends/cuda/emulator.ts loads. A library is rebuilt only when it is older than its
# .cu, emu.cpp, this script or any cuda/*.cuh. Files build independently: one that does not
# compile is named and the others still build; the script exits nonzero if any failed.
# Libraries whose .cu is gone are removed (their kernels would otherwise linger).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
zig=(bash scripts/zig.sh)
out=zig-out/lib
obj=zig-out/cuda-emu
mkdir -p "$out" "$obj"
# One build at a time (tests build on demand; several may start together).
if command -v flock >/dev/null; then exec 9>"$obj/.lock"; flock 9; fi
flags=(-O2 -std=c++20 -fPIC -fvisibility=hidden -DKILN_HOST_EMU -U_FORTIFY_SOURCE -Icuda -Wall -Wno-unused-function -Wno-unused-variable)

# stale OUT INPUT...: true when OUT is missing or older than any INPUT
stale() {
  local target="$1"; shift
  [[ -e "$target" ]] || return 0
  local f
  for f in "$@"; do [[ "$f" -nt "$target" ]] && return 0; done
  return 1
}

shopt -s nullglob
headers=(cuda/*.cuh)
common=("${headers[@]}" cuda/emu/emu.cpp scripts/build-cuda-emu.sh)
failed=()

if stale "$obj/emu.o" "${common[@]}"; then
  echo "cuda-emu: compiling cuda/emu/emu.cpp"
  if ! "${zig[@]}" c++ "${flags[@]}" -c cuda/emu/emu.cpp -o "$obj/emu.o.tmp"; then
    echo "cuda-emu: FAILED to compile cuda/emu/emu.cpp (nothing can be built)" >&2
    rm -f "$obj/emu.o.tmp"
    exit 1
  fi
  mv "$obj/emu.o.tmp" "$obj/emu.o"
fi

declare -A wanted=()
for src in cuda/*.cu cuda/emu/*.cu; do
  stem="$(basename "$src" .cu)"
  [[ "$src" == cuda/emu/* ]] && stem="emu-$stem"
  lib="$out/libkiln-cuda-emu-$stem.so"
  wanted["$lib"]=1
  stale "$lib" "$src" "$obj/emu.o" "${common[@]}" || continue
  echo "cuda-emu: building $lib from $src"
  if "${zig[@]}" c++ "${flags[@]}" -c -x c++ "$src" -o "$obj/$stem.o" &&
     "${zig[@]}" c++ -shared -fPIC -Wl,-Bsymbolic "$obj/$stem.o" "$obj/emu.o" -o "$lib.tmp"; then
    mv "$lib.tmp" "$lib"
  else
    echo "cuda-emu: FAILED to build $src (see the compiler output above)" >&2
    rm -f "$lib.tmp" "$lib"
    failed+=("$src")
  fi
done

for lib in "$out"/libkiln-cuda-emu-*.so; do
  [[ -n "${wanted[$lib]:-}" ]] || { echo "cuda-emu: removing $lib (its source is gone)"; rm -f "$lib"; }
done

if ((${#failed[@]})); then
  echo "cuda-emu: ${#failed[@]} file(s) did not build: ${failed[*]}" >&2
  exit 1
fi
