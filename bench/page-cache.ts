/**
 * How a model file sits in the page cache, and a re-read that puts it in 2 MiB pages.
 *
 * Decode streams every weight once per token through the file mapping, so the page size that
 * mapping uses matters: read through 4 KiB page-table entries the weights cost a TLB miss per
 * 4 KiB. On Linux 6.x the page cache holds a file in folios of mixed sizes, set by how it was
 * read or written: a file written by a program in small chunks (a download, kiln's own GGUF
 * writer) stays in small folios while it is cached, one read back from disk through a mapping
 * advised MADV_HUGEPAGE (libkiln's, see zig-kernels/memory.zig) comes in 2 MiB folios that are
 * mapped whole. On AMD EPYC Zen 5 (2 threads) TinyLlama-shape Q4_0 decoded at 15.3–16.5
 * ms/token from a file cached 34% in 2 MiB pages and 14.5–14.7 from the same bytes cached 100%.
 *
 * Both engines of a benchmark map the same page cache, so the suite re-reads each model this
 * way first: its figures then do not depend on how the file happened to be written.
 */
import { dlopen, FFIType, ptr } from "bun:ffi";
import { closeSync, fdatasyncSync, openSync, readFileSync } from "node:fs";
import { MappedFile } from "../src/runtime/mapped-file";

export interface PageCacheState {
  /** Fraction of the file's resident bytes mapped through 2 MiB pages (FilePmdMapped ÷ Rss). */
  huge_fraction: number;
  resident_bytes: number;
}

export interface PageCacheReread {
  before: PageCacheState;
  after: PageCacheState;
  seconds: number;
}

/** FilePmdMapped and Rss of the /proc/self/smaps entry that contains addr (Linux), in bytes. */
export function smapsEntry(smaps: string, addr: number): { pmd: number; rss: number } | null {
  let inRange = false;
  let pmd: number | null = null;
  let rss: number | null = null;
  for (const line of smaps.split("\n")) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (header) {
      if (inRange) break;
      inRange = parseInt(header[1]!, 16) <= addr && addr < parseInt(header[2]!, 16);
      continue;
    }
    if (!inRange) continue;
    const kb = /^(\w+):\s+(\d+) kB/.exec(line);
    if (kb?.[1] === "FilePmdMapped") pmd = Number(kb[2]) * 1024;
    if (kb?.[1] === "Rss") rss = Number(kb[2]) * 1024;
  }
  return pmd === null || rss === null ? null : { pmd, rss };
}

/** Maps the file (libkiln's mapping), touches every 4 KiB page, and reports how it is mapped. */
export function pageCacheState(path: string): PageCacheState | null {
  if (process.platform !== "linux") return null;
  const mf = new MappedFile(path);
  try {
    const b = mf.bytes;
    let sum = 0;
    for (let i = 0; i < b.length; i += 4096) sum += b[i]!;
    if (sum < 0) throw new Error("unreachable"); // keeps the reads
    const e = smapsEntry(readFileSync("/proc/self/smaps", "utf8"), Number(ptr(b)));
    return e === null ? null : { huge_fraction: e.rss > 0 ? e.pmd / e.rss : 0, resident_bytes: e.rss };
  } finally {
    mf.close();
  }
}

const POSIX_FADV_DONTNEED = 4;

/**
 * Drops the file's clean pages from the page cache (posix_fadvise DONTNEED, after fdatasync so
 * a freshly written file's pages are clean) and reads it back through libkiln's huge-page
 * advised mapping. Pages another process has mapped stay where they are. Null off Linux or
 * where libc cannot be opened.
 */
export function rereadInHugePages(path: string): PageCacheReread | null {
  if (process.platform !== "linux") return null;
  let fadvise: ((fd: number, offset: number, len: number, advice: number) => number) | null = null;
  try {
    fadvise = dlopen("libc.so.6", { posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 } }).symbols.posix_fadvise as never;
  } catch {
    return null;
  }
  const t0 = performance.now();
  const before = pageCacheState(path);
  if (before === null) return null;
  const fd = openSync(path, "r");
  try {
    fdatasyncSync(fd);
    const rc = fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (rc !== 0) return null;
  } finally {
    closeSync(fd);
  }
  const after = pageCacheState(path);
  if (after === null) return null;
  return { before, after, seconds: (performance.now() - t0) / 1000 };
}

/** One line for a benchmark's notes. */
export function describeReread(r: PageCacheReread | null): string {
  if (r === null) return "page cache: left as it was (not Linux, or posix_fadvise unavailable)";
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  return `page cache: the file was ${pct(r.before.huge_fraction)} in 2 MiB pages; dropped and re-read in ${r.seconds.toFixed(1)} s, now ${pct(r.after.huge_fraction)} (both engines map this page cache)`;
}

if (import.meta.main) {
  for (const path of process.argv.slice(2)) console.log(`${path}: ${describeReread(rereadInHugePages(path))}`);
}
