#!/usr/bin/env bun
/**
 * `bun run pack`: the npm tarballs of a release, into dist/.
 *
 *   bun scripts/pack.ts [--platform linux-x64]... [--no-build] [--out DIR]
 *
 * - `kiln` (dist/kiln-<version>.tgz): the TypeScript sources the package.json `files` field
 *   selects, with a package.json rewritten for users: the checkout-only fields (scripts,
 *   devDependencies, overrides, config) dropped, and one exact-version optionalDependency per
 *   platform package. Those are added here, not in the checkout's package.json: until they are
 *   published, `npm ci` in a checkout would fail on them ("Missing from lock file").
 * - `@kiln/<platform>` (dist/kiln-<platform>-<version>.tgz): package.json with `os`/`cpu` (and
 *   `libc` on Linux) plus lib/libkiln-<level>.<ext>, every CPU level of that platform. The
 *   package manager installs only the one matching the machine; src/ffi/library.ts finds it.
 *
 * The libraries come from `zig build prebuilt` (zig-out/prebuilt/<platform>/, cached by Zig);
 * --no-build packs what is there. A platform whose libraries are missing is skipped with a
 * notice (the main package still names it). --platform packs only the named platform packages
 * (the main package always). Tarballs are made by `bun pm pack`, which is deterministic (fixed
 * mtimes and modes): the same tree gives the same bytes (test/package/install.test.ts checks).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";

export const ROOT = resolve(import.meta.dir, "..");
export const DIST = join(ROOT, "dist");
export const PREBUILT = join(ROOT, "zig-out", "prebuilt");

export interface Platform {
  /** `${process.platform}-${process.arch}`: the package is `@kiln/<name>`. */
  name: string;
  os: string;
  cpu: string;
  libc?: string;
  ext: "so" | "dylib" | "dll";
  /** CPU levels built for it (src/ffi/library.ts's CpuLevel names). */
  levels: string[];
  /** Shown in the package description and the README. */
  label: string;
}

const X86 = ["x86_64-baseline", "x86_64-v3", "x86_64-v4"];
export const PLATFORMS: readonly Platform[] = [
  { name: "linux-x64", os: "linux", cpu: "x64", libc: "glibc", ext: "so", levels: X86, label: "Linux x64 (glibc)" },
  { name: "linux-arm64", os: "linux", cpu: "arm64", libc: "glibc", ext: "so", levels: ["aarch64"], label: "Linux arm64 (glibc)" },
  { name: "darwin-x64", os: "darwin", cpu: "x64", ext: "dylib", levels: X86, label: "macOS x64" },
  { name: "darwin-arm64", os: "darwin", cpu: "arm64", ext: "dylib", levels: ["aarch64"], label: "macOS arm64" },
  { name: "win32-x64", os: "win32", cpu: "x64", ext: "dll", levels: X86, label: "Windows x64" },
];

export const hostPlatform = (): string => `${process.platform}-${process.arch}`;
export const packageName = (p: Platform): string => `@kiln/${p.name}`;
export const libraryFile = (p: Platform, level: string): string => `libkiln-${level}.${p.ext}`;
export const mainTarball = (version: string, out = DIST): string => join(out, `kiln-${version}.tgz`);
export const platformTarball = (p: Platform, version: string, out = DIST): string => join(out, `kiln-${p.name}-${version}.tgz`);

/** The checkout's package.json. */
export function manifest(): Record<string, unknown> & { name: string; version: string } {
  return JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
}

function run(cmd: string[], cwd: string): string {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (r.status !== 0) throw new Error(`pack: \`${cmd.join(" ")}\` failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** `bun pm pack` of `dir` into `file`. */
function bunPack(dir: string, file: string): void {
  run([process.execPath, "pm", "pack", "--ignore-scripts", "--quiet", "--filename", file], dir);
  if (!existsSync(file)) throw new Error(`pack: bun pm pack wrote no ${file}`);
}

/**
 * Zig's `prebuilt` step (cached by Zig). When build.zig has a `prebuilt-<platform>` step for each
 * wanted platform, only those run (the install test then compiles just this machine's levels).
 */
function buildPrebuilt(platforms: readonly Platform[]): void {
  const zig = ["bash", join(ROOT, "scripts", "zig.sh"), "build"];
  const steps = new Set(run([...zig, "-l"], ROOT).split("\n").map((l) => l.trim().split(/\s+/)[0]));
  if (!steps.has("prebuilt")) {
    throw new Error("pack: build.zig has no `prebuilt` step (zig-out/prebuilt/<platform>/); --no-build packs what zig-out/prebuilt holds");
  }
  const each = platforms.map((p) => `prebuilt-${p.name}`);
  const chosen = platforms.length < PLATFORMS.length && each.every((s) => steps.has(s)) ? each : ["prebuilt"];
  console.error(`pack: zig build ${chosen.join(" ")} -Doptimize=ReleaseFast`);
  const r = spawnSync("bash", [join(ROOT, "scripts", "zig.sh"), "build", ...chosen, "-Doptimize=ReleaseFast"], { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  if (r.status !== 0) throw new Error(`pack: zig build ${chosen.join(" ")} failed (exit ${r.status})`);
}

/** The main package's package.json as users get it. */
function publishedManifest(pkg: Record<string, unknown>, version: string): Record<string, unknown> {
  const { scripts: _s, devDependencies: _d, overrides: _o, config: _c, ...rest } = pkg;
  return { ...rest, optionalDependencies: Object.fromEntries(PLATFORMS.map((p) => [packageName(p), version])) };
}

function platformManifest(p: Platform, pkg: Record<string, unknown>): Record<string, unknown> {
  const copied = Object.fromEntries(["license", "repository", "homepage", "author"].filter((k) => k in pkg).map((k) => [k, pkg[k]]));
  return {
    name: packageName(p),
    version: pkg.version,
    description: `kiln's prebuilt kernel libraries for ${p.label}: ${p.levels.join(", ")}. Installed by kiln as an optional dependency.`,
    ...copied,
    os: [p.os],
    cpu: [p.cpu],
    ...(p.libc ? { libc: [p.libc] } : {}),
    files: ["lib/"],
  };
}

export interface Packed {
  name: string;
  file: string;
  bytes: number;
}

export interface PackResult {
  version: string;
  main: Packed;
  platforms: Packed[];
  skipped: { name: string; missing: string[] }[];
}

export function pack(opts: { build?: boolean; platforms?: string[]; out?: string } = {}): PackResult {
  const out = resolve(opts.out ?? DIST);
  const pkg = manifest();
  const version = pkg.version;
  const wanted = opts.platforms?.length ? PLATFORMS.filter((p) => opts.platforms!.includes(p.name)) : PLATFORMS;
  const unknown = (opts.platforms ?? []).filter((n) => !PLATFORMS.some((p) => p.name === n));
  if (unknown.length) throw new Error(`pack: unknown platform ${unknown.join(", ")}; one of ${PLATFORMS.map((p) => p.name).join(", ")}`);
  if (opts.build ?? true) buildPrebuilt(wanted);

  const stage = join(out, ".stage");
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  try {
    // Main package: bun pm pack of the checkout selects the files (package.json `files`), then
    // the same files are packed again beside the rewritten package.json.
    const raw = join(stage, "raw.tgz");
    bunPack(ROOT, raw);
    const mainDir = join(stage, "kiln");
    mkdirSync(mainDir);
    run(["tar", "-xzf", raw, "-C", mainDir, "--strip-components=1"], stage);
    writeFileSync(join(mainDir, "package.json"), JSON.stringify(publishedManifest(pkg, version), null, 2) + "\n");
    const main = { name: "kiln", file: mainTarball(version, out), bytes: 0 };
    rmSync(main.file, { force: true });
    bunPack(mainDir, main.file);
    main.bytes = statSync(main.file).size;

    const platforms: Packed[] = [];
    const skipped: PackResult["skipped"] = [];
    for (const p of wanted) {
      const file = platformTarball(p, version, out);
      rmSync(file, { force: true });
      const from = join(PREBUILT, p.name);
      const missing = p.levels.map((l) => libraryFile(p, l)).filter((f) => !existsSync(join(from, f)));
      if (missing.length) {
        skipped.push({ name: p.name, missing });
        continue;
      }
      const dir = join(stage, p.name);
      mkdirSync(join(dir, "lib"), { recursive: true });
      writeFileSync(join(dir, "package.json"), JSON.stringify(platformManifest(p, pkg), null, 2) + "\n");
      for (const l of p.levels) {
        const to = join(dir, "lib", libraryFile(p, l));
        copyFileSync(join(from, libraryFile(p, l)), to);
        chmodSync(to, 0o755);
      }
      bunPack(dir, file);
      platforms.push({ name: packageName(p), file, bytes: statSync(file).size });
    }
    return { version, main, platforms, skipped };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/** The files of a .tgz (paths inside `package/`), by `tar -tzf`. */
export function tarballFiles(file: string): string[] {
  return run(["tar", "-tzf", file], ROOT)
    .split("\n")
    .filter((l) => l && !l.endsWith("/"))
    .map((l) => l.replace(/^package\//, ""));
}

/** The files the checkout's package.json `files` field publishes, as `bun pm pack` selects them. */
export function checkoutFiles(): string[] {
  const dir = mkdtempSync(join(tmpdir(), "kiln-files-"));
  try {
    const file = join(dir, "kiln.tgz");
    bunPack(ROOT, file);
    return tarballFiles(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const size = (n: number) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

if (import.meta.main) {
  let o;
  try {
    ({ values: o } = parseArgs({ args: process.argv.slice(2), options: { platform: { type: "string", multiple: true }, "no-build": { type: "boolean" }, out: { type: "string" } } }));
  } catch (e) {
    console.error(`pack: ${(e as Error).message}\nusage: bun scripts/pack.ts [--platform NAME]... [--no-build] [--out DIR]`);
    process.exit(2);
  }
  try {
    const r = pack({ build: !o["no-build"], platforms: o.platform, out: o.out });
    for (const s of r.skipped) console.error(`pack: NOTICE: skipped @kiln/${s.name}: ${s.missing.join(", ")} not in zig-out/prebuilt/${s.name}/`);
    const rows = [r.main, ...r.platforms];
    const w = Math.max(...rows.map((x) => x.name.length));
    for (const x of rows) console.log(`${x.name.padEnd(w)}  ${size(x.bytes).padStart(10)}  ${relative(process.cwd(), x.file)}`);
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
