#!/usr/bin/env bun
/**
 * `bun run kiln …` in a source checkout: the published command (src/cli.ts) plus what only a
 * checkout has — `kiln bench` (bench/suite.ts: kiln against llama.cpp, a dev dependency).
 * Everything but `bench` goes to src/cli.ts unchanged.
 */
import { main } from "../src/cli";

const [cmd, ...rest] = process.argv.slice(2);
let code: number;
if (cmd === "bench") {
  try {
    const { benchMain } = await import("../bench/suite");
    code = await benchMain(rest);
  } catch (e) {
    console.error(`kiln bench: ${(e as Error).message}`);
    code = 1;
  }
} else {
  code = await main(process.argv.slice(2));
  if (cmd === "--help" || cmd === "-h" || cmd === "help") console.log("  kiln bench [--model PATH]... [--json] [--quick] [--reps N] …   (this checkout only: kiln against llama.cpp; every option in bench/suite.ts)");
}
process.exit(code);
