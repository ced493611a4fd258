/**
 * Per-op time breakdown of decoding: a context's profiler (Context.profiler, an OpProfiler from
 * src/backends/cpu.ts) times every kernel call of its forward calls by op; this runs a prompt,
 * then `tokens` greedy decode steps with it on, and reports the average per decoded token. Time not inside any kernel call (TypeScript,
 * FFI marshalling, view bookkeeping) is the "other" row. Used by `kiln generate --profile`,
 * `kiln bench --profile` and `KILN_PROFILE=1`.
 */
import { KilnError } from "../errors";
import type { Context } from "./context";
import { argmax } from "./sampling";

/** One op's row of a DecodeProfile. */
export interface OpShare {
  /** The op's category ("output head", "ffn gate+up", …; "other (TS, FFI, bookkeeping)" for time outside kernels). */
  op: string;
  /** Average ms per decoded token. */
  ms: number;
  /** Average calls per decoded token. */
  calls: number;
  /** Fraction of the token's wall time. */
  share: number;
}

/** Per-op time of decoding, averaged per token (profileDecode). */
export interface DecodeProfile {
  /** Decode steps averaged over. */
  tokens: number;
  /** Context length (tokens in the KV cache) when profiling began. */
  context: number;
  /** Average wall ms per decoded token (forward + greedy sampling). */
  msPerToken: number;
  /** Per-op rows, largest first, then the "other" row. */
  ops: OpShare[];
}

/** Prefills `promptIds` from an empty context, then profiles `tokens` greedy decode steps. */
export function profileDecode(ctx: Context, promptIds: readonly number[], tokens = 8): DecodeProfile {
  if (!Number.isSafeInteger(tokens) || tokens < 1) throw new KilnError("BAD_OPTION", `profileDecode: tokens must be a positive integer, got ${tokens}`);
  if (promptIds.length === 0) throw new KilnError("BAD_OPTION", "profileDecode: empty prompt");
  if (promptIds.length + tokens + 1 > ctx.contextLength) {
    throw new KilnError("BAD_OPTION", `profileDecode: ${promptIds.length} prompt + ${tokens + 1} decode tokens exceed the context length ${ctx.contextLength}`);
  }
  ctx.reset();
  let logits = ctx.eval(promptIds);
  let tok = argmax(logits.f32);
  logits = ctx.eval([tok]); // one untimed step: decode-sized views and caches warm
  tok = argmax(logits.f32);
  const context = ctx.nPast;
  const profiler = ctx.profiler;
  const was = ctx.profiling;
  ctx.profiling = true;
  profiler.reset();
  let wall = 0;
  try {
    for (let i = 0; i < tokens; i++) {
      const t0 = performance.now();
      logits = ctx.eval([tok]);
      const t1 = performance.now();
      tok = argmax(logits.f32);
      profiler.record("sampling (argmax)", t1);
      wall += performance.now() - t0;
    }
  } finally {
    ctx.profiling = was;
  }
  const ops = profiler.snapshot();
  profiler.reset();
  const inOps = ops.reduce((a, o) => a + o.ms, 0);
  const rows: OpShare[] = ops.map((o) => ({ op: o.op, ms: o.ms / tokens, calls: o.calls / tokens, share: o.ms / wall }));
  rows.push({ op: "other (TS, FFI, bookkeeping)", ms: Math.max(0, wall - inOps) / tokens, calls: 0, share: Math.max(0, wall - inOps) / wall });
  return { tokens, context, msPerToken: wall / tokens, ops: rows };
}

/** A plain-text table of a profile. */
export function formatProfile(p: DecodeProfile, title = "decode profile"): string {
  const lines = [`${title}: ${p.msPerToken.toFixed(2)} ms/token (${(1000 / p.msPerToken).toFixed(1)} tok/s), average of ${p.tokens} tokens at context ${p.context}`];
  lines.push(`  ${"op".padEnd(30)}${"ms/token".padStart(10)}${"share".padStart(8)}${"calls".padStart(8)}`);
  for (const o of p.ops) {
    lines.push(`  ${o.op.padEnd(30)}${o.ms.toFixed(3).padStart(10)}${((o.share * 100).toFixed(1) + "%").padStart(8)}${(o.calls ? o.calls.toFixed(0) : "").padStart(8)}`);
  }
  return lines.join("\n");
}
