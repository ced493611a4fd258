/**
 * The default thread count: physical cores (SMT siblings share a core's vector units, and the
 * kernels are bound by them or by memory bandwidth, so a second hardware thread per core only
 * adds contention), read once.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { KilnError } from "../errors";

/** Most threads a context may ask for (zig-kernels/pool.zig max_threads). */
export const MAX_THREADS = 256;

let physical: number | undefined;

/** Physical cores this process may use: Linux sibling lists when readable, else the logical count. */
export function physicalCores(): number {
  if (physical !== undefined) return physical;
  const logical = availableParallelism();
  physical = logical;
  const dir = "/sys/devices/system/cpu";
  try {
    if (process.platform === "linux" && existsSync(dir)) {
      const cores = new Set<string>();
      for (const name of readdirSync(dir)) {
        if (!/^cpu\d+$/.test(name)) continue;
        const f = `${dir}/${name}/topology/thread_siblings_list`;
        if (existsSync(f)) cores.add(readFileSync(f, "utf8").trim());
      }
      // Only trust it when it covers what the scheduler gives us (containers may restrict CPUs).
      if (cores.size > 0 && cores.size <= logical) physical = Math.max(1, Math.round((cores.size * logical) / Math.max(logical, countOnline(dir) ?? logical)));
    }
  } catch {
    physical = logical;
  }
  return physical;
}

function countOnline(dir: string): number | undefined {
  try {
    // "0-3,8-11" → 8
    return readFileSync(`${dir}/online`, "utf8")
      .trim()
      .split(",")
      .reduce((n, r) => {
        const [a, b] = r.split("-").map(Number);
        return n + (b === undefined ? 1 : b! - a! + 1);
      }, 0);
  } catch {
    return undefined;
  }
}

/** Checks a thread-count option. */
export function checkThreads(n: number, what = "threads"): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_THREADS) throw new KilnError("BAD_OPTION", `${what} must be an integer in [1, ${MAX_THREADS}], got ${n}`);
  return n;
}
