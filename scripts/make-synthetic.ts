#!/usr/bin/env bun
/**
 * Writes a synthetic GGUF model (seeded random weights, real metadata and tokenizer):
 *
 *   bun scripts/make-synthetic.ts --arch llama --type q4_0 --shape tinyllama --out /tmp/tl.gguf [--seed N] [--tied] [--ctx N]
 *
 * --arch  llama | qwen2 | gemma3
 * --type  f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k q4_k_m
 * --shape tiny | tinyllama | llama2-7b
 * --ctx   context_length written to the file (default: the shape's; long-context benchmarks use 32768)
 */
import { parseArgs } from "node:util";
import { resolveHParams, writeSyntheticModel, type SyntheticArch, type SyntheticShapeName, type SyntheticType } from "../src/tools/synthetic-model";

const USAGE =
  "usage: bun scripts/make-synthetic.ts --arch llama|qwen2|gemma3 --type <dtype|q4_k_m> --shape tiny|tinyllama|llama2-7b --out path.gguf [--seed N] [--tied] [--ctx N]";

function main(): number {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        arch: { type: "string" },
        type: { type: "string" },
        shape: { type: "string", default: "tiny" },
        out: { type: "string" },
        seed: { type: "string", default: "0" },
        tied: { type: "boolean", default: false },
        ctx: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.arch || !values.type || !values.out) {
    console.error(USAGE);
    return 2;
  }
  const seed = Number(values.seed);
  try {
    const arch = values.arch as SyntheticArch;
    let shape: SyntheticShapeName | ReturnType<typeof resolveHParams> = values.shape as SyntheticShapeName;
    if (values.ctx !== undefined) {
      const nCtx = Number(values.ctx);
      if (!Number.isSafeInteger(nCtx) || nCtx < 1) throw new Error(`--ctx must be a positive integer, got "${values.ctx}"`);
      shape = { ...resolveHParams(arch, shape), nCtx };
    }
    const r = writeSyntheticModel(values.out, {
      arch,
      type: values.type as SyntheticType,
      shape,
      name: values.ctx !== undefined ? `synthetic-${arch}-${values.shape}-${values.type}-ctx${values.ctx}` : undefined,
      seed,
      tiedOutput: values.tied,
    });
    console.log(`wrote ${r.path}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.tensors} tensors in ${(r.ms / 1000).toFixed(1)} s`);
    return 0;
  } catch (e) {
    console.error(`make-synthetic: ${(e as Error).message}`);
    return 1;
  }
}

process.exit(main());
