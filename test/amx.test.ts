/**
 * Intel AMX for prefill (zig-kernels/amx.zig): the library says whether its Q8_0/Q4_0 prefill
 * matmuls run on AMX and, if not, why; the reason matches the build and the CPU, and KILN_AMX=0
 * turns AMX off. (The kernel itself is tested in Zig, on emulated tiles at every level and on
 * the hardware where AMX is present.)
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AMX_STATUS, amxStatus, cpuInfo, loadedLevel } from "../src/ffi/library";

const libraryModule = join(import.meta.dir, "..", "src", "ffi", "library.ts");

/** amxStatus() in a fresh process (the status is decided once per process) with `env` added. */
function statusInFreshProcess(env: Record<string, string>): { enabled: boolean; reason: string } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "KILN_AMX"));
  const code = `import { amxStatus } from ${JSON.stringify(libraryModule)}; console.log(JSON.stringify(amxStatus()));`;
  const r = Bun.spawnSync([process.execPath, "-e", code], { env: { ...base, ...env } as Record<string, string> });
  if (r.exitCode !== 0) throw new Error(`amxStatus() in a fresh process failed: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString().trim());
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

  test("KILN_AMX=0 turns AMX off whatever the machine; other values leave the decision to the checks", () => {
    expect(statusInFreshProcess({ KILN_AMX: "0" })).toEqual({ enabled: false, reason: "disabled_by_env" });
    const on = statusInFreshProcess({ KILN_AMX: "1" });
    expect(on.reason).not.toBe("disabled_by_env");
    expect(statusInFreshProcess({})).toEqual(on);
  });
});
