/**
 * `bun add kiln` as a new user gets it: `bun run pack` (scripts/pack.ts) makes the tarballs, and
 * a fresh project outside the repository installs the main tarball plus this platform's
 * `@kiln/<platform>` tarball (the optionalDependency points at it through `overrides`) with no
 * Zig, no Python and nothing reachable to build or fetch with:
 * - PATH is a temporary folder holding `bun` and links to every /usr/bin program except
 *   python* and zig* (checked: neither resolves), and the registry is a closed local port, so
 *   nothing can come from npm either;
 * - then the README's snippet runs there against the repository's Gemma 3 270M (a few tokens)
 *   and must print text, the kernels must come from node_modules/@kiln/<platform>/lib, and the
 *   installed `kiln` bin (node_modules/.bin/kiln) must print its usage.
 * The tarballs must not carry test/, bench/, scripts/ or src/tools/, and the platform tarball
 * every CPU level of its platform.
 *
 * Packing runs Zig's cached `prebuilt` step; KILN_PACK_DIR=DIR reuses tarballs already packed
 * there (by `bun run pack -- --out DIR`) instead.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostPlatform, libraryFile, mainTarball, manifest, PLATFORMS, platformTarball, ROOT, tarballFiles } from "../../scripts/pack";

const MODEL = join(ROOT, "models", "gemma-3-270m-Q4_K_M.gguf");
const host = PLATFORMS.find((p) => p.name === hostPlatform());
if (!host) console.warn(`[skip] install test: no kiln platform package for ${hostPlatform()}`);
const haveModel = existsSync(MODEL);
if (!haveModel) console.warn(`[skip] install test, README snippet: ${MODEL} is absent (run: bash scripts/fetch-model.sh)`);

const work = mkdtempSync(join(tmpdir(), "kiln-install-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const version = manifest().version;
const packDir = process.env.KILN_PACK_DIR ?? join(work, "dist");
const project = join(work, "project");
const bin = join(work, "bin");

/** A clean environment: only the restricted PATH, a private Bun cache, no KILN_* settings. */
const env = () => ({ PATH: bin, HOME: work, TMPDIR: tmpdir(), BUN_INSTALL_CACHE_DIR: join(work, "bun-cache"), NO_COLOR: "1" });

function sh(cmd: string[], cwd: string, timeout = 120_000) {
  const p = Bun.spawnSync(cmd, { cwd, env: env(), stdout: "pipe", stderr: "pipe", timeout });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

/** The first ```ts block of README.md that imports "kiln": the snippet a new user copies. */
function readmeSnippet(): string {
  const blocks = [...readFileSync(join(ROOT, "README.md"), "utf8").matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const snippet = blocks.find((b) => /from "kiln"/.test(b) && b.includes("loadModel("));
  if (!snippet) throw new Error("README.md has no ```ts block importing loadModel from \"kiln\"");
  return snippet;
}

describe.skipIf(!host)(`bun add kiln on ${hostPlatform()}, from the packed tarballs`, () => {
  beforeAll(() => {
    // PATH: bun, and /usr/bin (= /bin here) without python or zig.
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, "bun"));
    for (const name of readdirSync("/usr/bin")) {
      if (/^(python|zig)/i.test(name) || existsSync(join(bin, name))) continue;
      symlinkSync(join("/usr/bin", name), join(bin, name));
    }
    if (!process.env.KILN_PACK_DIR) {
      const p = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "pack.ts"), "--platform", host!.name, "--out", packDir], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
      if (p.exitCode !== 0) throw new Error(`bun run pack failed:\n${p.stdout}${p.stderr}`);
    }
  }, 1_800_000); // a fresh checkout compiles every platform's libraries (cached afterwards)

  test("the tarballs: sources only, and every CPU level of this platform", () => {
    const main = tarballFiles(mainTarball(version, packDir));
    expect(main).toContain("package.json");
    expect(main).toContain("src/index.ts");
    expect(main).toContain("src/cli.ts");
    expect(main.filter((f) => /^(test|bench|scripts|zig-kernels|zig-out|docs|models)\//.test(f) || f.startsWith("src/tools/") || f === "src/demo.ts")).toEqual([]);
    const published = JSON.parse(Bun.spawnSync(["tar", "-xOzf", mainTarball(version, packDir), "package/package.json"]).stdout.toString());
    expect(published.optionalDependencies).toEqual(Object.fromEntries(PLATFORMS.map((p) => [`@kiln/${p.name}`, version])));
    expect(published.devDependencies).toBeUndefined();
    expect(published.scripts).toBeUndefined();
    const lib = tarballFiles(platformTarball(host!, version, packDir));
    expect(lib.sort()).toEqual(["package.json", ...host!.levels.map((l) => `lib/${libraryFile(host!, l)}`)].sort());
  });

  test.skipIf(!!process.env.KILN_PACK_DIR)("packing is deterministic: the same tree gives the same bytes", () => {
    const again = join(work, "dist-again");
    const p = Bun.spawnSync([process.execPath, join(ROOT, "scripts", "pack.ts"), "--no-build", "--platform", host!.name, "--out", again], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    for (const [a, b] of [[mainTarball(version, packDir), mainTarball(version, again)], [platformTarball(host!, version, packDir), platformTarball(host!, version, again)]]) {
      expect(Bun.hash(readFileSync(b!))).toBe(Bun.hash(readFileSync(a!)));
    }
  });

  test("PATH has bun but neither zig nor python", () => {
    const probe = sh(["/bin/sh", "-c", "command -v bun; command -v zig || echo no-zig; command -v python3 || echo no-python3; command -v python || echo no-python"], work);
    expect(probe.out.trim().split("\n")).toEqual([join(bin, "bun"), "no-zig", "no-python3", "no-python"]);
  });

  describe("a fresh project", () => {
    let added: ReturnType<typeof sh>;
    beforeAll(() => {
      mkdirSync(project);
      // The optional dependency @kiln/<host> resolves to the local tarball; every other @kiln/*
      // would need the registry, which is a closed port (their install is optional: a warning).
      // kiln's runtime dependencies (package.json "dependencies", e.g. @huggingface/jinja) come from
      // the checkout's node_modules, packed here as the registry would serve them.
      const overrides: Record<string, string> = { [`@kiln/${host!.name}`]: `file:${platformTarball(host!, version, packDir)}` };
      for (const dep of Object.keys((manifest() as { dependencies?: Record<string, string> }).dependencies ?? {})) {
        const tgz = join(work, `${dep.replace(/[@/]/g, "_")}.tgz`);
        const src = join(ROOT, "node_modules", dep);
        // npm tarballs hold the package under "package/".
        const tar = Bun.spawnSync(["tar", "-czf", tgz, "-C", join(src, ".."), "--transform", `s,^${dep.split("/").pop()},package,`, dep.split("/").pop()!], { stderr: "pipe" });
        if (tar.exitCode !== 0) throw new Error(`packing ${src}: ${tar.stderr.toString()}`);
        overrides[dep] = `file:${tgz}`;
      }
      writeFileSync(join(project, "package.json"), JSON.stringify({ name: "kiln-install-test", private: true, type: "module", overrides }, null, 2));
      writeFileSync(join(project, "bunfig.toml"), `[install]\nregistry = "http://127.0.0.1:9/"\n`);
      added = sh(["bun", "add", mainTarball(version, packDir)], project, 300_000);
    }, 320_000);

    test("bun add installs kiln and this platform's kernels, building nothing", () => {
      expect(added.err).not.toMatch(new RegExp(`error|@kiln/${host!.name}`, "i"));
      expect(added.code).toBe(0);
      const mod = join(project, "node_modules");
      expect(existsSync(join(mod, "kiln", "src", "index.ts"))).toBe(true);
      expect(existsSync(join(mod, "kiln", "zig-out"))).toBe(false);
      expect(readdirSync(join(mod, "@kiln"))).toEqual([host!.name]); // the other platforms are skipped
      expect(readdirSync(join(mod, "@kiln", host!.name, "lib")).sort()).toEqual(host!.levels.map((l) => libraryFile(host!, l)).sort());
    });

    test("the installed kiln bin prints its usage", () => {
      const r = sh([join(project, "node_modules", ".bin", "kiln"), "--help"], project);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out).toContain("usage:");
      expect(r.out).toContain("kiln generate --model PATH --prompt TEXT");
    });

    test("kernels load from node_modules/@kiln/<platform>/lib; kiln/ops is importable", () => {
      const probe = [
        `import { loadedLibrary } from "kiln";`,
        `import { matmul, Tensor } from "kiln/ops";`,
        `console.log(JSON.stringify({ ...loadedLibrary(), ops: typeof matmul + " " + typeof Tensor }));`,
      ];
      writeFileSync(join(project, "which.ts"), probe.join("\n") + "\n");
      const r = sh(["bun", "which.ts"], project);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      const j = JSON.parse(r.out);
      expect(j.source).toBe("package");
      expect(j.path).toStartWith(join(project, "node_modules", "@kiln", host!.name, "lib") + "/");
      expect(host!.levels).toContain(j.level);
      expect(j.ops).toBe("function function");
    });

    test.skipIf(!haveModel)("the README snippet prints text", () => {
      const snippet = readmeSnippet();
      expect(snippet).toContain('"models/gemma-3-270m-Q4_K_M.gguf"');
      expect(snippet).toMatch(/maxTokens: \d+/);
      const code = snippet.replace('"models/gemma-3-270m-Q4_K_M.gguf"', JSON.stringify(MODEL)).replace(/maxTokens: \d+/, "maxTokens: 8");
      writeFileSync(join(project, "snippet.ts"), code);
      const r = sh(["bun", "snippet.ts"], project, 180_000);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out.trim().length).toBeGreaterThan(0);
      expect(r.out).toMatch(/[A-Za-z]/);
    }, 200_000);
  });
});
