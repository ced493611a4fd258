/**
 * The binding against the library itself: the dlopen table names exactly the symbols each
 * build (and each `zig build prebuilt` file, ELF, Mach-O or PE) exports, every build reports the
 * CPU level it was compiled for, the type table and limits agree with the kernels', every x86
 * level this machine can run gives the same answers, the level chosen is the best the CPU
 * reports (its features checked against /proc/cpuinfo), and the library is found through
 * KILN_LIBRARY, the dev build or the @kiln/<platform> package, in that order.
 */
import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canRun, CPU_FEATURES, CPU_LEVEL_IDS, CPU_LEVELS, cpuInfo, detectCpuLevel, devLibraryDir, libraryFileName, libraryPath, limits, loadLibrary, PLATFORM, Status, symbols, type CpuFeature, type CpuLevel } from "../src/ffi/library";
import { DTYPE_IDS, DTYPE_LAYOUT, type DType } from "../src/tensor";
import { nmse, randn } from "./helpers";

/** Exported function names from an ELF shared library's dynamic symbol table. */
function elfExports(path: string): Set<string> {
  const b = readFileSync(path);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) throw new Error(`${path}: not a 64-bit ELF`);
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const sections = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * shentsize;
    return { type: dv.getUint32(o + 4, true), offset: Number(dv.getBigUint64(o + 0x18, true)), size: Number(dv.getBigUint64(o + 0x20, true)), link: dv.getUint32(o + 0x28, true), entsize: Number(dv.getBigUint64(o + 0x38, true)) };
  });
  const dynsym = sections.find((s) => s.type === 11)!; // SHT_DYNSYM
  const strtab = sections[dynsym.link]!;
  const names = new Set<string>();
  for (let o = dynsym.offset; o < dynsym.offset + dynsym.size; o += dynsym.entsize) {
    const nameOff = dv.getUint32(o, true);
    const info = b[o + 4]!;
    const shndx = dv.getUint16(o + 6, true);
    if ((info & 0xf) !== 2 || shndx === 0) continue; // defined functions only
    let end = strtab.offset + nameOff;
    while (b[end] !== 0) end++;
    names.add(b.toString("latin1", strtab.offset + nameOff, end));
  }
  return names;
}

/** Exported (external, defined) symbol names of a 64-bit Mach-O dylib, from LC_SYMTAB, without the leading "_". */
function machoExports(b: Buffer): Set<string> {
  const ncmds = b.readUInt32LE(16);
  const names = new Set<string>();
  for (let i = 0, o = 32; i < ncmds; i++, o += b.readUInt32LE(o + 4)) {
    if (b.readUInt32LE(o) !== 0x2) continue; // LC_SYMTAB
    const [symoff, nsyms, stroff] = [b.readUInt32LE(o + 8), b.readUInt32LE(o + 12), b.readUInt32LE(o + 16)];
    for (let k = 0; k < nsyms; k++) {
      const e = symoff + 16 * k;
      const type = b[e + 4]!;
      if (type & 0xe0 || (type & 0x0e) !== 0x0e || !(type & 0x01)) continue; // N_STAB, not N_SECT, not N_EXT
      const start = stroff + b.readUInt32LE(e);
      names.add(b.toString("latin1", start + 1, b.indexOf(0, start)));
    }
  }
  return names;
}

/** Names in a PE32+ DLL's export directory. */
function peExports(b: Buffer): Set<string> {
  const pe = b.readUInt32LE(0x3c);
  const nSections = b.readUInt16LE(pe + 6);
  const opt = pe + 24;
  if (b.readUInt16LE(opt) !== 0x20b) throw new Error("not PE32+");
  const sections = Array.from({ length: nSections }, (_, i) => {
    const o = opt + b.readUInt16LE(pe + 20) + 40 * i;
    return { va: b.readUInt32LE(o + 12), size: b.readUInt32LE(o + 16), raw: b.readUInt32LE(o + 20) };
  });
  const file = (rva: number) => {
    const s = sections.find((s) => rva >= s.va && rva < s.va + s.size)!;
    return rva - s.va + s.raw;
  };
  const dir = file(b.readUInt32LE(opt + 112)); // DataDirectory[0]: exports
  const [nNames, namesRva] = [b.readUInt32LE(dir + 24), b.readUInt32LE(dir + 32)];
  const names = new Set<string>();
  for (let i = 0; i < nNames; i++) {
    const start = file(b.readUInt32LE(file(namesRva) + 4 * i));
    names.add(b.toString("latin1", start, b.indexOf(0, start)));
  }
  return names;
}

/** Exported function names of a shared library in any of the formats kiln ships. */
function libraryExports(path: string): Set<string> {
  const b = readFileSync(path);
  if (b.readUInt32LE(0) === 0xfeedfacf) return machoExports(b);
  if (b.readUInt16LE(0) === 0x5a4d) return peExports(b); // "MZ"
  return elfExports(path);
}

const runnable = (level: CpuLevel): boolean => canRun(level, detectCpuLevel());

const libraryModule = join(import.meta.dir, "..", "src", "ffi", "library.ts");

/** Runs `code` in a fresh bun with `env` on top of this one's (KILN_* removed first): the library is process-wide. */
function inFreshProcess(code: string, env: Record<string, string> = {}): { ok: boolean; out: string; err: string } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KILN_")));
  const r = Bun.spawnSync([process.execPath, "-e", code], { env: { ...base, ...env } as Record<string, string> });
  return { ok: r.exitCode === 0, out: r.stdout.toString().trim(), err: r.stderr.toString() };
}

describe("libkiln builds", () => {
  for (const level of CPU_LEVELS) {
    test(`${level}: built, and its kiln_* exports are exactly the binding's table`, () => {
      const path = libraryPath(level);
      expect(existsSync(path)).toBe(true);
      const exported = [...elfExports(path)].filter((n) => n.startsWith("kiln_")).sort();
      expect(exported).toEqual(Object.keys(symbols).sort());
    });
  }

  // `zig build prebuilt` output, when present: every platform's files export exactly the table.
  const prebuilt = join(import.meta.dir, "..", "zig-out", "prebuilt");
  const platformFiles = existsSync(prebuilt) ? readdirSync(prebuilt).flatMap((p) => readdirSync(join(prebuilt, p)).map((f) => join(p, f))) : [];
  for (const file of platformFiles) {
    test(`prebuilt ${file}: its kiln_* exports are exactly the binding's table`, () => {
      const exported = [...libraryExports(join(prebuilt, file))].filter((n) => n.startsWith("kiln_")).sort();
      expect(exported).toEqual(Object.keys(symbols).sort());
    });
  }

  for (const level of CPU_LEVELS.filter(runnable)) {
    test(`${level}: loads, reports its level, and agrees with the type table`, () => {
      const lib = loadLibrary(level);
      try {
        expect(lib.symbols.kiln_cpu_level()).toBe(CPU_LEVEL_IDS[level]);
        for (const [name, id] of Object.entries(DTYPE_IDS)) {
          expect(lib.symbols.kiln_type_block_size(id)).toBe(DTYPE_LAYOUT[name as DType].blockSize);
          expect(lib.symbols.kiln_type_size(id)).toBe(DTYPE_LAYOUT[name as DType].typeSize);
        }
        expect(lib.symbols.kiln_type_block_size(10)).toBeLessThan(0); // Q2_K: not supported
      } finally {
        lib.close();
      }
    });
  }

  test("every runnable level computes the same Q4_K and Q4_0 matmuls (within integer-path rounding)", () => {
    const [n, k] = [64, 512];
    const results: Float32Array[] = [];
    for (const level of CPU_LEVELS.filter(runnable)) {
      const lib = loadLibrary(level);
      const s = lib.symbols;
      try {
        for (const dtype of ["q4_0", "q4_k"] as const) {
          const id = DTYPE_IDS[dtype];
          const w = new Uint8Array((n * k / DTYPE_LAYOUT[dtype].blockSize) * DTYPE_LAYOUT[dtype].typeSize);
          expect(s.kiln_quantize_row(id, randn(n * k, 5), w, n * k)).toBe(0);
          const x = randn(k, 6);
          const xq = new Uint8Array(s.kiln_act_row_bytes(id, k) as number);
          expect(s.kiln_quantize_act(id, x, k, 1, k, xq)).toBe(0);
          const y = new Float32Array(n);
          expect(s.kiln_matmul(id, w, n, k, xq, 1, y, n)).toBe(0);
          results.push(y);
        }
      } finally {
        lib.close();
      }
    }
    for (let i = 2; i < results.length; i++) expect(nmse(results[i]!, results[i % 2]!)).toBeLessThan(1e-10);
  });

  test("every runnable level reports the same kernel limits, and the kernels enforce them", () => {
    const reported = limits();
    expect(reported.maxInvariantRows).toBeGreaterThan(1);
    expect(reported.packedMaxK % 32).toBe(0);
    for (const level of CPU_LEVELS.filter(runnable)) {
      const lib = loadLibrary(level);
      try {
        expect(lib.limits).toEqual(reported);
        expect(lib.symbols.kiln_limit(1000)).toBe(Status.badArg);
        // One head_dim past the cap is refused before any memory is read.
        const hd = reported.maxHeadDim + 1;
        const f = new Float32Array(hd);
        const args = [f, hd, hd, f, f, 0, hd, hd, f, hd, hd, 1, 1, 1, hd, 1, 0, 0, 1, 0] as const;
        expect(lib.symbols.kiln_flash_attention(...args)).toBe(Status.badArg);
      } finally {
        lib.close();
      }
    }
  });

  test("KILN_CPU must name a level", () => {
    expect(() => loadLibrary("x86_64-v9" as CpuLevel)).toThrow(/KILN_CPU=x86_64-v9 is not a CPU level/);
  });
});

describe("CPU level choice", () => {
  const printLevel = `const l = await import(${JSON.stringify(libraryModule)}); console.log(l.loadedLevel(), l.kiln().kiln_cpu_level());`;

  test("without KILN_CPU the loader takes the best level the CPU reports", () => {
    const r = inFreshProcess(printLevel);
    expect(r.err).toBe("");
    const best = detectCpuLevel();
    expect(r.out).toBe(`${best} ${CPU_LEVEL_IDS[best]}`);
  });

  test("KILN_CPU forces a level the CPU runs; one it cannot run, or no level, is a clear error", () => {
    const lowest: CpuLevel = process.arch === "arm64" ? "aarch64" : "x86_64-baseline";
    expect(inFreshProcess(printLevel, { KILN_CPU: lowest }).out).toBe(`${lowest} ${CPU_LEVEL_IDS[lowest]}`);
    const foreign: CpuLevel = process.arch === "arm64" ? "x86_64-baseline" : "aarch64";
    const r = inFreshProcess(printLevel, { KILN_CPU: foreign });
    expect(r.ok).toBe(false);
    expect(r.err).toMatch(new RegExp(`cannot run the ${foreign} build \\(forced by KILN_CPU=${foreign}`));
    expect(inFreshProcess(printLevel, { KILN_CPU: "x86_64-v9" }).err).toMatch(/KILN_CPU=x86_64-v9 is not a CPU level/);
  });

  test.if(process.platform === "linux")("the detected features are the ones /proc/cpuinfo lists", () => {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const line = info.split("\n").find((l) => /^(flags|Features)\s*:/.test(l)) ?? "";
    const flags = new Set(line.split(":")[1]!.trim().split(/\s+/));
    const cpuinfoName: Partial<Record<CpuFeature, string>> = { lzcnt: "abm" };
    const archFeatures = (Object.keys(CPU_FEATURES) as CpuFeature[]).filter((f) => (CPU_FEATURES[f] >= 32) === (process.arch === "arm64"));
    const expected = archFeatures.filter((f) => flags.has(cpuinfoName[f] ?? f));
    expect([...cpuInfo().features]).toEqual(expected);
  });
});

describe("where the library is found", () => {
  const best = detectCpuLevel();
  const lowest: CpuLevel = process.arch === "arm64" ? "aarch64" : "x86_64-baseline";
  const archLevels = CPU_LEVELS.filter((l) => (l === "aarch64") === (process.arch === "arm64"));
  /** Prints loadedLibrary() of `module` (default: the checkout's library.ts) as JSON. */
  const whichCode = (module = libraryModule) => `const l = await import(${JSON.stringify(module)}); const w = l.loadedLibrary(); console.log(JSON.stringify({ ...w, reported: l.kiln().kiln_cpu_level() }));`;
  const which = (env: Record<string, string> = {}, module?: string) => {
    const r = inFreshProcess(whichCode(module), env);
    if (!r.ok) throw new Error(r.err);
    return JSON.parse(r.out) as { path: string; level: CpuLevel; source: string; reported: number };
  };
  let tmp = "";
  const copyLibraries = (dir: string) => {
    mkdirSync(dir, { recursive: true });
    for (const l of archLevels) copyFileSync(join(devLibraryDir, libraryFileName(l)), join(dir, libraryFileName(l)));
  };

  test("(b) in a checkout, without KILN_LIBRARY: the dev build, at the best level", () => {
    expect(which()).toEqual({ path: join(devLibraryDir, libraryFileName(best)), level: best, source: "dev", reported: CPU_LEVEL_IDS[best] });
  });

  test("(a) KILN_LIBRARY naming a folder: its files, at the best level", () => {
    tmp = mkdtempSync(join(tmpdir(), "kiln-lib-"));
    try {
      copyLibraries(join(tmp, "libs"));
      expect(which({ KILN_LIBRARY: join(tmp, "libs") })).toEqual({ path: join(tmp, "libs", libraryFileName(best)), level: best, source: "env", reported: CPU_LEVEL_IDS[best] });
      // KILN_CPU still picks among them.
      expect(which({ KILN_LIBRARY: join(tmp, "libs"), KILN_CPU: lowest }).path).toBe(join(tmp, "libs", libraryFileName(lowest)));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test("(a) KILN_LIBRARY naming one file: that file, at the level it reports; a missing path is a clear error", () => {
    tmp = mkdtempSync(join(tmpdir(), "kiln-lib-"));
    try {
      const file = join(tmp, "kernels.bin"); // the name says nothing: the level comes from the file
      copyFileSync(join(devLibraryDir, libraryFileName(lowest)), file);
      expect(which({ KILN_LIBRARY: file })).toEqual({ path: file, level: lowest, source: "env", reported: CPU_LEVEL_IDS[lowest] });
      const r = inFreshProcess(whichCode(), { KILN_LIBRARY: join(tmp, "nope") });
      expect(r.ok).toBe(false);
      expect(r.err).toContain(`KILN_LIBRARY=${join(tmp, "nope")} does not exist`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test("(c) a copy of kiln with no dev build: the @kiln/<platform> package, else one error naming every place tried", () => {
    tmp = mkdtempSync(join(tmpdir(), "kiln-pkg-"));
    try {
      const module = join(tmp, "kiln", "src", "ffi", "library.ts");
      mkdirSync(join(tmp, "kiln", "src", "ffi"), { recursive: true });
      copyFileSync(libraryModule, module);
      copyFileSync(join(libraryModule, "..", "..", "errors.ts"), join(tmp, "kiln", "src", "errors.ts")); // library.ts's one import
      const r = inFreshProcess(whichCode(module));
      expect(r.ok).toBe(false);
      for (const part of [`no kernel library for ${PLATFORM}`, "KILN_LIBRARY (not set)", join(tmp, "kiln", "zig-out", "lib"), `@kiln/${PLATFORM} (not installed)`, `bun add @kiln/${PLATFORM}`, "bun run build"]) expect(r.err).toContain(part);

      const pkg = join(tmp, "kiln", "node_modules", "@kiln", PLATFORM);
      copyLibraries(join(pkg, "lib"));
      writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: `@kiln/${PLATFORM}`, version: "0.0.0" }));
      expect(which({}, module)).toEqual({ path: join(pkg, "lib", libraryFileName(best)), level: best, source: "package", reported: CPU_LEVEL_IDS[best] });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  const prebuilt = join(import.meta.dir, "..", "zig-out", "prebuilt", PLATFORM);
  test.if(existsSync(prebuilt))("the stripped `zig build prebuilt` libraries of this platform load and compute", () => {
    const code = `const l = await import(${JSON.stringify(libraryModule)}); const s = l.kiln(); const x = new Float32Array(256).map((_, i) => Math.sin(i)); const q = new Uint8Array(s.kiln_type_size(8) * 8); console.log(JSON.stringify({ ...l.loadedLibrary(), status: s.kiln_quantize_row(8, x, q, 256), limits: l.limits() }));`;
    const r = inFreshProcess(code, { KILN_LIBRARY: prebuilt });
    expect(r.err).toBe("");
    expect(JSON.parse(r.out)).toEqual({ path: join(prebuilt, libraryFileName(best)), level: best, source: "env", status: 0, limits: limits() });
  });
});
