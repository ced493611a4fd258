/**
 * The API reference builds without a warning: TypeDoc (pinned dev dependency) over typedoc.json
 * — the entry points src/index.ts and src/ops.ts — with validation on (notDocumented,
 * invalidLink, notExported) and every warning an error, into a temporary folder. A public export
 * (or a member of one) without a doc comment fails here, named in the message.
 */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "./markdown";

const TYPEDOC = join(ROOT, "node_modules", "typedoc", "bin", "typedoc");

test(
  "typedoc over src/index.ts and src/ops.ts: no warnings, every export documented",
  async () => {
    if (!existsSync(TYPEDOC)) throw new Error(`${TYPEDOC} is missing: typedoc is a pinned dev dependency (npm ci / bun install)`);
    const out = mkdtempSync(join(tmpdir(), "kiln-reference-"));
    try {
      const proc = Bun.spawn(
        [process.execPath, TYPEDOC, "--options", "typedoc.json", "--out", out, "--treatWarningsAsErrors", "--treatValidationWarningsAsErrors", "--logLevel", "Warn"],
        { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" } },
      );
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      const log = (stdout + stderr).replace(/\x1b\[[0-9;]*m/g, "");
      const problems = log.split("\n").filter((l) => /\[(warning|error)\]/.test(l));
      if (code !== 0 || problems.length > 0) {
        throw new Error(`typedoc exited with ${code}; ${problems.length} warnings/errors:\n${problems.join("\n") || log.slice(-4000)}`);
      }
      expect(existsSync(join(out, "index.html"))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
  120_000,
);
