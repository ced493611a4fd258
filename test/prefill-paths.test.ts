/**
 * The prefill paths a CPU feature turns on at run time: Intel AMX for quantized weights
 * (zig-kernels/amx.zig), AMX-BF16 tiles and AVX512-BF16 for BF16 weights (amx.zig, bf16.zig). The library
 * says whether each is in use and, if not, why; the reason matches the build and the CPU, and
 * KILN_AMX=0 / KILN_BF16=0 turn them off. (The kernels themselves are tested in Zig, on their
 * emulations at every level and on the hardware where the CPU has it.) Likewise the decode
 * kernels' prefetch hint (zig-kernels/cpu.zig PrefetchPolicy): the CPU's choice, or
 * KILN_PREFETCH's; the Zig tests check that both give the same bits.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AMX_STATUS, amxBf16Status, amxStatus, BF16_STATUS, bf16Status, cpuInfo, loadedLevel, PREFETCH_POLICIES, prefetchPolicy } from "../src/ffi/library";

const libraryModule = join(import.meta.dir, "..", "src", "ffi", "library.ts");

/** The answer of amxStatus(), bf16Status() or prefetchPolicy() in a fresh process (each is decided once per process) with `env` added, or its error. */
function inFreshProcess(fn: "amxStatus" | "amxBf16Status" | "bf16Status" | "prefetchPolicy", env: Record<string, string>): { ok: true; value: Record<string, unknown> } | { ok: false; stderr: string } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "KILN_AMX" && k !== "KILN_BF16" && k !== "KILN_PREFETCH"));
  const code = `import { ${fn} } from ${JSON.stringify(libraryModule)}; console.log(JSON.stringify(${fn}()));`;
  const r = Bun.spawnSync([process.execPath, "-e", code], { env: { ...base, ...env } as Record<string, string> });
  if (r.exitCode !== 0) return { ok: false, stderr: r.stderr.toString() };
  return { ok: true, value: JSON.parse(r.stdout.toString().trim()) };
}

function statusInFreshProcess(fn: "amxStatus" | "amxBf16Status" | "bf16Status" | "prefetchPolicy", env: Record<string, string>): Record<string, unknown> {
  const r = inFreshProcess(fn, env);
  if (!r.ok) throw new Error(`${fn}() in a fresh process failed: ${r.stderr}`);
  return r.value;
}

/** The CPU's vendor string and family as Linux lists them, or null off Linux. */
function procCpuIdentity(): { vendor: string; family: number } | null {
  if (process.platform !== "linux" || !existsSync("/proc/cpuinfo")) return null;
  const text = readFileSync("/proc/cpuinfo", "utf8");
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(text)?.[1];
  const family = /^cpu family\s*:\s*(\d+)/m.exec(text)?.[1];
  return vendor && family ? { vendor, family: Number(family) } : null;
}

/** The CPU's flags as Linux lists them, or null off Linux. */
function procCpuFlags(): Set<string> | null {
  if (process.platform !== "linux" || !existsSync("/proc/cpuinfo")) return null;
  const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => /^flags\s*:/.test(l));
  return line ? new Set(line.split(":")[1]!.trim().split(/\s+/)) : null;
}

describe("AMX status", () => {
  test("the reason is one the binding knows, and agrees with the build and the CPU", () => {
    const s = amxStatus();
    expect(AMX_STATUS).toContain(s.reason);
    expect(s.enabled).toBe(s.reason === "enabled");
    expect(amxStatus()).toEqual(s); // decided once
    if (process.env.KILN_AMX === "0") {
      expect(s.reason).toBe("disabled_by_env");
      return;
    }
    if (loadedLevel() !== "x86_64-v4" || process.platform !== "linux") {
      expect(s.reason).toBe("not_built");
      return;
    }
    const features = cpuInfo().features;
    const flags = procCpuFlags();
    if (flags && !flags.has("amx_int8")) {
      // This machine (e.g. AMD Zen 4, or Intel before Sapphire Rapids): no AMX-INT8.
      expect(s.reason).toBe("no_cpu_support");
      console.log(`AMX not available on this CPU: amxStatus() = ${JSON.stringify(s)}`);
    } else if (!features.includes("amx_tile") || !features.includes("amx_int8")) {
      expect(["no_cpu_support", "no_os_support"]).toContain(s.reason);
    } else {
      // AMX present: enabled unless Linux refused the tile permission or the self-check failed.
      expect(["enabled", "permission_denied", "self_check_failed"]).toContain(s.reason);
      if (!s.enabled) console.log(`AMX present but not used: ${s.reason}`);
    }
  });
});

describe("AMX-BF16 status (BF16 weights' prefill on tiles)", () => {
  test("follows the AMX decision, then the CPU's AMX-BF16 flag; where both are there, the hardware passes its self-check", () => {
    const s = amxBf16Status();
    expect(AMX_STATUS).toContain(s.reason);
    expect(s.enabled).toBe(s.reason === "enabled");
    expect(amxBf16Status()).toEqual(s); // decided once
    const amx = amxStatus();
    if (!amx.enabled) {
      expect(s.reason).toBe(amx.reason); // KILN_AMX=0, not built, no AMX: the same answer
      return;
    }
    const flags = procCpuFlags();
    if (flags && !flags.has("amx_bf16")) {
      expect(s.reason).toBe("no_cpu_support");
    } else {
      // AMX-BF16 present (Sapphire Rapids and later): its results must stay inside the f32
      // summation bound, so a failed self-check is a finding worth a failing test.
      expect(s.reason).toBe("enabled");
    }
  });

  test("KILN_AMX=0 turns it off with the int8 kernel", () => {
    expect(statusInFreshProcess("amxBf16Status", { KILN_AMX: "0" })).toEqual({ enabled: false, reason: "disabled_by_env" });
  });
});

describe("AVX512-BF16 status (BF16 weights' prefill)", () => {
  test("the reason is one the binding knows, and agrees with the build and the CPU", () => {
    const s = bf16Status();
    expect(BF16_STATUS).toContain(s.reason);
    expect(s.enabled).toBe(s.reason === "enabled");
    expect(bf16Status()).toEqual(s); // decided once
    if (process.env.KILN_BF16 === "0") {
      expect(s.reason).toBe("disabled_by_env");
      return;
    }
    if (loadedLevel() !== "x86_64-v4") {
      expect(s.reason).toBe("not_built");
      return;
    }
    const flags = procCpuFlags();
    if (!cpuInfo().features.includes("avx512_bf16") || (flags && !flags.has("avx512_bf16"))) {
      expect(s.reason).toBe("no_cpu_support");
      console.log(`AVX512-BF16 not available on this CPU: bf16Status() = ${JSON.stringify(s)}`);
    } else {
      // The CPU has it (AMD Zen 4 and later, Intel Cooper Lake / Sapphire Rapids and later): only
      // a failed self-check leaves it off, and that is a finding worth a failing test.
      expect(s.reason).toBe("enabled");
    }
  });
});

describe("environment switches", () => {
  for (const [fn, name] of [["amxStatus", "KILN_AMX"], ["bf16Status", "KILN_BF16"]] as const) {
    test(`${name}=0 turns ${fn}'s path off whatever the machine; other values leave the decision to the checks`, () => {
      expect(statusInFreshProcess(fn, { [name]: "0" })).toEqual({ enabled: false, reason: "disabled_by_env" });
      const on = statusInFreshProcess(fn, { [name]: "1" });
      expect(on.reason).not.toBe("disabled_by_env");
      expect(statusInFreshProcess(fn, {})).toEqual(on);
    });
  }
});

describe("decode prefetch policy", () => {
  test("the CPU's choice: prefetchnta on AMD Zen 5 (family 26) and later, prefetcht1 on Intel, the per-level hints elsewhere", () => {
    if (process.env.KILN_PREFETCH) return; // the environment chose; the next test covers that
    const p = prefetchPolicy();
    expect(PREFETCH_POLICIES).toContain(p.policy);
    expect(p.source).toBe("cpu");
    expect(prefetchPolicy()).toEqual(p); // decided once
    const id = process.arch === "x64" ? procCpuIdentity() : null;
    if (id) expect(p.policy).toBe(id.vendor === "AuthenticAMD" && id.family >= 26 ? "non_temporal" : id.vendor === "GenuineIntel" ? "l2" : "by_level");
    else if (process.arch !== "x64") expect(p.policy).toBe("by_level");
  });

  test("KILN_PREFETCH picks any policy on any machine; a value that names none is refused at load, naming it", () => {
    for (const policy of PREFETCH_POLICIES) expect(statusInFreshProcess("prefetchPolicy", { KILN_PREFETCH: policy })).toEqual({ policy, source: "env" });
    const bad = inFreshProcess("prefetchPolicy", { KILN_PREFETCH: "nta" });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.stderr).toContain("KILN_PREFETCH=nta is not a prefetch policy; use one of by_level, non_temporal, l2");
  });
});

