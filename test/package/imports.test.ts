/**
 * What the published package imports. The package ships TypeScript sources (Bun runs them), so
 * an import of a file the `files` field leaves out breaks only for users, never in the checkout:
 * - nothing in src/ imports bench/, test/, scripts/ or src/tools/ (runtime or type-level);
 * - every file the package publishes (as `bun pm pack` selects them) resolves each of its
 *   imports to another published file, and imports no package but `node:*`/`bun:*` builtins
 *   (kiln has no dependencies);
 * - the `exports` map and `bin` name published files, and the bin starts with a Bun shebang.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { checkoutFiles, manifest, ROOT } from "../../scripts/pack";

const transpiler = new Bun.Transpiler({ loader: "ts" });

/** Every import of TS source: what runs (Bun's own scan) and what only types use. */
function importsOfCode(code: string): { spec: string; typeOnly: boolean }[] {
  const runtime = new Set(transpiler.scanImports(code).map((i) => i.path));
  // Type-level imports (`import type`, `typeof import("…")`) are erased before Bun's scan; find
  // them in the text, skipping comment lines (doc comments quote usage like `from "kiln"`).
  const typeLevel = new Set<string>();
  for (const line of code.split("\n")) {
    if (/^\s*(\*|\/\/|\/\*)/.test(line)) continue;
    for (const m of line.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*)["']([^"']+)["']/g)) typeLevel.add(m[1]!);
  }
  return [...new Set([...runtime, ...typeLevel])].map((spec) => ({ spec, typeOnly: !runtime.has(spec) }));
}

const importsOf = (file: string) => importsOfCode(readFileSync(file, "utf8").replace(/^#!.*/, "")); // the scanner rejects a shebang

/** Bun's resolution of a relative specifier, relative to the repository root. */
function resolveRelative(from: string, spec: string): string | null {
  const base = join(dirname(from), spec);
  for (const c of [base, `${base}.ts`, join(base, "index.ts")]) if (existsSync(c) && statSync(c).isFile()) return relative(ROOT, c);
  return null;
}

const isBuiltin = (spec: string) => spec.startsWith("node:") || spec.startsWith("bun:") || spec === "bun";

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(dir, f));
}

describe("src/ imports", () => {
  test("no file in src/ imports bench/, test/, scripts/ or src/tools/", () => {
    const bad: string[] = [];
    let seen = 0;
    for (const file of tsFiles(join(ROOT, "src"))) {
      const rel = relative(ROOT, file);
      for (const { spec } of importsOf(file)) {
        if (!spec.startsWith(".")) continue;
        seen++;
        const target = relative(ROOT, join(dirname(file), spec));
        // src/tools/ may import its own files; nothing else in src/ may reach into it.
        const inTools = target.startsWith("src/tools") && !rel.startsWith("src/tools/");
        if (/^(bench|test|scripts)(\/|$)/.test(target) || inTools) bad.push(`${rel}: ${spec}`);
      }
    }
    expect(seen).toBeGreaterThan(50); // the scan found the imports (a broken scan passes nothing)
    expect(bad).toEqual([]);
  });

  test("the scan sees runtime, type-only and dynamic imports, and skips comments", () => {
    const code = `/**\n * import { x } from "../bench/doc";\n */\nimport type { A } from "../bench/a";\nlet s: typeof import("../test/b");\nconst m = await import("./c");\nexport * from "./d";\n`;
    expect(importsOfCode(code).sort((a, b) => a.spec.localeCompare(b.spec))).toEqual([
      { spec: "../bench/a", typeOnly: true },
      { spec: "../test/b", typeOnly: true },
      { spec: "./c", typeOnly: false },
      { spec: "./d", typeOnly: false },
    ]);
  });
});

describe("the published file set", () => {
  const files = checkoutFiles();
  const published = new Set(files);
  const pkg = manifest() as { exports: Record<string, string>; bin: Record<string, string> };

  test("is src/ (without src/tools/ and the demo), README.md and package.json", () => {
    expect(files).toContain("package.json");
    expect(files).toContain("README.md");
    expect(files).toContain("src/index.ts");
    expect(files).toContain("src/ops.ts");
    expect(files).toContain("src/ffi/library.ts");
    const stray = files.filter((f) => /^(test|bench|scripts|docs|zig-kernels|zig-out|models|node_modules|dist)\//.test(f) || f.startsWith("src/tools/") || f === "src/demo.ts" || f === "build.zig");
    expect(stray).toEqual([]);
  });

  test("every import of every published file resolves inside the published set or a declared dependency", () => {
    const runtimeDependencies = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).dependencies ?? {}) as Record<string, string>;
    const bad: string[] = [];
    for (const rel of files.filter((f) => f.endsWith(".ts"))) {
      for (const { spec, typeOnly } of importsOf(join(ROOT, rel))) {
        const why = `${rel}: ${typeOnly ? "type-only import" : "import"} "${spec}"`;
        if (isBuiltin(spec)) continue;
        if (!spec.startsWith(".")) {
          // A package must be a declared runtime dependency (its name: "@scope/name" or "name", before any subpath).
          const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
          if (!Object.hasOwn(runtimeDependencies, name)) bad.push(`${why} is a package that is not in package.json's dependencies`);
        }
        else {
          const target = resolveRelative(join(ROOT, rel), spec);
          if (!target) bad.push(`${why} does not resolve`);
          else if (!published.has(target)) bad.push(`${why} → ${target}, which is not published`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  test("exports and bin name published files; the bin runs under Bun", () => {
    expect(Object.keys(pkg.exports).sort()).toEqual([".", "./ops", "./package.json"]);
    for (const target of [...Object.values(pkg.exports), ...Object.values(pkg.bin)]) expect(published).toContain(target.replace(/^\.\//, ""));
    const bin = pkg.bin.kiln!;
    expect(readFileSync(join(ROOT, bin), "utf8").split("\n")[0]).toBe("#!/usr/bin/env bun");
  });
});
