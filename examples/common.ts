/**
 * What the examples share: where the models are, the `--small` switch, and byte formatting.
 * Not an example itself.
 *
 * Every example takes `--small`: the same program with small settings (fewer tokens, shorter
 * documents, smaller sweeps) so that test/examples/examples.test.ts can run all of them in a
 * couple of minutes. Without it they run at full size. Each also takes `--threads N`.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

/** `bun examples/NAME.ts --small`: small settings for a quick run (the examples' test uses it). */
export const small = process.argv.includes("--small");

/**
 * `--threads N`: kernel threads (default: kiln's, the physical cores). On a machine shared with
 * other work, fewer threads than cores can be much faster: the test runs the examples with 1.
 */
export const threads: number | undefined = (() => {
  const i = process.argv.indexOf("--threads");
  if (i < 0) return undefined;
  const n = Number(process.argv[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--threads takes a positive integer, got ${process.argv[i + 1]}`);
  return n;
})();

/** The arguments that are not options (--small, --threads N). */
export const positional: string[] = process.argv.slice(2).filter((a, i, all) => !a.startsWith("--") && all[i - 1] !== "--threads");

const modelsDir = join(import.meta.dir, "..", "models");

/** Gemma 3 270M Q4_K_M: the base model kiln's performance is measured on (scripts/setup.sh fetches it). */
export const GEMMA = join(modelsDir, "gemma-3-270m-Q4_K_M.gguf");
/** SmolLM2-135M-Instruct Q4_1: an instruction-tuned model with a ChatML template (scripts/setup.sh fetches it). */
export const SMOLLM2 = join(modelsDir, "SmolLM2-135M-Instruct.Q4_1.gguf");

/** The path, or exit with a message saying how to get the model. */
export function requireModel(path: string): string {
  if (!existsSync(path)) {
    console.error(`${path} is missing: run \`bash scripts/setup.sh\` first (it fetches the models).`);
    process.exit(1);
  }
  return path;
}

/** Bytes as MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Bytes as KiB below 1 MiB, else MiB, with one decimal. */
export function kibOrMib(bytes: number): string {
  return bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KiB` : mib(bytes);
}

/** "1 thread", "2 threads". */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** Peak resident set size of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Current resident set size of this process, in bytes. */
export function rssBytes(): number {
  return process.memoryUsage().rss;
}
