/**
 * Every fenced ```ts and ```sh block of README.md and docs/*.md runs, against the real models,
 * from the repository root:
 *
 * - ts blocks are written to a file under test/docs/.tmp/ (inside the repo, so `openai` and the
 *   other dev dependencies resolve) with `from "kiln"` and `from "kiln/ops"` pointed at
 *   src/index.ts and src/ops.ts (the package's two entry points, as package.json `exports` maps
 *   them), and run with this Bun;
 * - sh blocks run with bash -eo pipefail, with `kiln` on PATH as this checkout's command
 *   (scripts/kiln.ts: src/cli.ts plus `kiln bench`) and `bun` as the project's pinned Bun (the
 *   server blocks also use curl).
 *
 * A block that cannot run here carries `<!-- not-run: REASON -->` on the line right before its
 * fence; the reason is required, and the skipped blocks are listed on the console. Files this
 * test's author does not edit (ALLOWED) are allow-listed here instead, by block number and the
 * block's first words, so a moved block is noticed rather than silently skipped.
 *
 *   bun test test/docs/code-blocks.test.ts                     # every file
 *   KILN_DOCS=docs/api.md bun test test/docs/code-blocks.test.ts   # one file (KILN_DOCS_VERBOSE=1: and their output)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, codeBlocks, markdownFiles, readMarkdown, type CodeBlock } from "./markdown";

/**
 * Blocks of files whose owners place their own markers (docs/server.md, docs/performance.md):
 * skipped here with the reason, until the marker is in the markdown. `starts` must be how the
 * block begins.
 */
const ALLOWED: { file: string; block: number; starts: string; reason: string }[] = [];

/** Per block: a model load, a short generation, or a CLI call (Gemma 3 270M loads in ~0.3 s). */
const BLOCK_TIMEOUT_MS = 120_000;

/** KILN_DOCS_VERBOSE=1 prints what every block printed. */
const verbose = process.env.KILN_DOCS_VERBOSE === "1";
const only = process.env.KILN_DOCS?.split(",").filter(Boolean);
const files = markdownFiles().filter((f) => !only || only.includes(f));
const blocks: CodeBlock[] = files.flatMap((f) => codeBlocks(f, readMarkdown(f)));

const TMP = join(ROOT, "test", "docs", ".tmp", `run-${process.pid}`);
const BIN = join(TMP, "bin");

function allowed(b: CodeBlock) {
  return ALLOWED.find((a) => a.file === b.file && a.block === b.index);
}

/** Why a block is skipped, or null when it runs. */
function skipReason(b: CodeBlock): string | null {
  if (b.notRun) return b.notRun;
  return allowed(b)?.reason ?? null;
}

/** `from "kiln"` / `from "kiln/ops"` (and dynamic imports of them) → the checkout's entry points. */
function rewriteImports(code: string): string {
  return code
    .replace(/(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])kiln\/ops\2/g, `$1$2${join(ROOT, "src", "ops.ts")}$2`)
    .replace(/(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])kiln\2/g, `$1$2${join(ROOT, "src", "index.ts")}$2`);
}

function setup(): void {
  if (existsSync(BIN)) return;
  mkdirSync(BIN, { recursive: true });
  const kiln = join(BIN, "kiln");
  writeFileSync(kiln, `#!/usr/bin/env bash\nexec "${process.execPath}" "${join(ROOT, "scripts", "kiln.ts")}" "$@"\n`);
  chmodSync(kiln, 0o755);
}

async function run(b: CodeBlock): Promise<{ code: number; output: string }> {
  setup();
  const name = `${b.file.replace(/[^\w]+/g, "_")}-${b.index}`;
  let cmd: string[];
  if (b.lang === "ts") {
    const path = join(TMP, `${name}.ts`);
    writeFileSync(path, rewriteImports(b.code));
    cmd = [process.execPath, path];
  } else {
    const path = join(TMP, `${name}.sh`);
    writeFileSync(path, b.code);
    cmd = ["bash", "-eo", "pipefail", path];
  }
  const env = { ...process.env, PATH: `${BIN}:${join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? ""}` };
  delete env.KILN_PROFILE;
  const proc = Bun.spawn(cmd, { cwd: ROOT, env, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => proc.kill(), BLOCK_TIMEOUT_MS - 5_000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, output: (out + (err ? `\n[stderr]\n${err}` : "")).trim() };
}

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe("markers", () => {
  test("every not-run marker gives a reason, and no marker is misspelled", () => {
    const bad = blocks.filter((b) => b.notRun === "" || b.badMarker !== null);
    expect(bad.map((b) => `${b.file} block ${b.index} (line ${b.line}): ${b.badMarker ?? "<!-- not-run --> without a reason"}`)).toEqual([]);
  });

  test("the parser sees markers, their reasons and misspellings", () => {
    const md = [
      "```ts", "run();", "```",
      "<!-- not-run: needs a GPU -->", "```sh", "nvidia-smi", "```",
      "<!-- not-run -->", "```ts", "x();", "```",
      "<!-- not run: typo -->", "```bash", "y", "```",
      "```json", "{}", "```",
    ].join("\n");
    const got = codeBlocks("x.md", md).map((b) => [b.index, b.lang, b.notRun, b.badMarker]);
    expect(got).toEqual([
      [1, "ts", null, null],
      [2, "sh", "needs a GPU", null],
      [3, "ts", "", null],
      [4, "sh", null, "<!-- not run: typo -->"],
    ]);
    expect(rewriteImports('import { a } from "kiln";\nimport * as o from \'kiln/ops\';')).toBe(
      `import { a } from "${join(ROOT, "src", "index.ts")}";\nimport * as o from '${join(ROOT, "src", "ops.ts")}';`,
    );
  });

  test("allow-list entries name existing blocks by how they start", () => {
    const stale: string[] = [];
    for (const a of ALLOWED) {
      if (only && !only.includes(a.file)) continue;
      const b = blocks.find((x) => x.file === a.file && x.index === a.block);
      if (!b) stale.push(`${a.file} block ${a.block}: no such ts/sh block`);
      else if (!b.code.trimStart().startsWith(a.starts)) stale.push(`${a.file} block ${a.block} (line ${b.line}) starts "${b.code.trim().slice(0, 40)}", not "${a.starts}"`);
      else if (b.notRun) console.log(`[docs] ${a.file} block ${a.block} now has its own marker: its ALLOWED entry can go`);
    }
    expect(stale).toEqual([]);
  });

  test("lists the blocks that do not run here", () => {
    const skipped = blocks.filter((b) => skipReason(b) !== null);
    const lines = skipped.map((b) => `  ${b.file} block ${b.index} (line ${b.line}, ${b.lang})${b.notRun ? "" : " [allow-list]"}: ${skipReason(b)}`);
    console.log(`[docs] ${blocks.length} ts/sh blocks in ${files.length} files; ${blocks.length - skipped.length} run, ${skipped.length} do not run here:\n${lines.join("\n")}`);
    if (!only) expect(blocks.length).toBeGreaterThan(0);
  });
});

describe("code blocks run", () => {
  for (const b of blocks) {
    const reason = skipReason(b);
    const title = `${b.file} block ${b.index} (line ${b.line}, ${b.lang})`;
    if (reason !== null) {
      test.skip(`${title}: ${reason}`, () => {});
      continue;
    }
    test(
      title,
      async () => {
        const r = await run(b);
        if (r.code !== 0) throw new Error(`${title} exited with ${r.code}:\n${b.code}\n--- output ---\n${r.output.slice(-4000)}`);
        if (verbose) console.log(`--- ${title}\n${r.output}`);
      },
      BLOCK_TIMEOUT_MS,
    );
  }
});
