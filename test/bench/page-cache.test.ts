/** bench/page-cache.ts: reading smaps, and the re-read that puts a model file in 2 MiB pages. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeReread, pageCacheState, rereadInHugePages, smapsEntry } from "../../bench/page-cache";

const dir = mkdtempSync(join(tmpdir(), "kiln-page-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SMAPS = [
  "7f0000000000-7f0000400000 r--p 00000000 fd:00 11 /models/a.gguf",
  "Size:               4096 kB",
  "Rss:                4096 kB",
  "FilePmdMapped:      4096 kB",
  "VmFlags: rd mr mw me hg",
  "7f0000400000-7f0000a00000 r--p 00000000 fd:00 12 /models/b.gguf",
  "Size:               6144 kB",
  "Rss:                 512 kB",
  "FilePmdMapped:         0 kB",
  "VmFlags: rd mr mw me",
].join("\n");

describe("page cache", () => {
  test("smapsEntry reads the entry that holds the address, not its neighbour", () => {
    expect(smapsEntry(SMAPS, 0x7f0000000000)).toEqual({ pmd: 4096 * 1024, rss: 4096 * 1024 });
    expect(smapsEntry(SMAPS, 0x7f00003fffff)).toEqual({ pmd: 4096 * 1024, rss: 4096 * 1024 });
    expect(smapsEntry(SMAPS, 0x7f0000400000)).toEqual({ pmd: 0, rss: 512 * 1024 });
    expect(smapsEntry(SMAPS, 0x7f0000a00000)).toBeNull(); // one past the last mapping
  });

  test.if(process.platform === "linux")("a re-read file is resident whole, and its state is reported", () => {
    const path = join(dir, "weights.bin");
    const bytes = 6 * 2 ** 20 + 4096;
    writeFileSync(path, new Uint8Array(bytes).map((_, i) => (i * 31) & 255));
    const r = rereadInHugePages(path);
    expect(r).not.toBeNull();
    for (const s of [r!.before, r!.after]) {
      expect(s.resident_bytes).toBe(bytes); // every page touched, the mapping's Rss is the file
      expect(s.huge_fraction).toBeGreaterThanOrEqual(0);
      expect(s.huge_fraction).toBeLessThanOrEqual(1);
    }
    expect(pageCacheState(path)!.resident_bytes).toBe(bytes);
    // Whether the kernel gave 2 MiB folios depends on it (THP, filesystem); say what it did.
    console.error(`page-cache test: ${describeReread(r)}`);
    expect(describeReread(r)).toMatch(/^page cache: the file was \d+% in 2 MiB pages; dropped and re-read in [\d.]+ s, now \d+%/);
    expect(describeReread(null)).toContain("left as it was");
  });
});
