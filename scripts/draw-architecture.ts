#!/usr/bin/env bun
/**
 * Draws docs/architecture.svg (kiln's layers, bottom to top, imports pointing down) from the
 * data description below. No dependencies: the SVG is written as text.
 *
 *   bun scripts/draw-architecture.ts           # writes docs/architecture.svg
 *   bun scripts/draw-architecture.ts --check   # exit 1 when docs/architecture.svg is not what this draws
 *
 * Change the layers here, not in the SVG; test/docs/architecture.test.ts runs --check.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** One box: a layer (or a part of one), where it lives, and what it knows. */
interface Box {
  title: string;
  where: string;
  knows: string;
}

/** Top to bottom: each row imports only from the rows below it. A row may hold boxes side by side. */
const LAYERS: Box[][] = [
  [
    { title: "faces", where: "src/index.ts · src/ops.ts · src/cli.ts", knows: "kiln and kiln/ops entry points; the kiln command" },
    { title: "chat and server", where: "src/chat/ · src/server/", knows: "templates, sessions, JSON schema; kiln serve" },
  ],
  [{ title: "runtime", where: "src/runtime/", knows: "Model (shared) → Context (KV cache) · Batch · generate loop, sampling, speculative decoding, profile" }],
  [
    { title: "models", where: "src/models/", knows: "one file per architecture: forward(); state.ts: KV cache" },
    { title: "tokenizers", where: "src/tokenizer/", knows: "SentencePiece and BPE from GGUF metadata" },
  ],
  [{ title: "tensors and backend", where: "src/tensor.ts · src/backends/cpu.ts", knows: "dtype, shape, bytes; every op checks shapes, then makes one FFI call" }],
  [
    { title: "file format", where: "src/gguf/", knows: "validated zero-copy reader; writer" },
    { title: "binding", where: "src/ffi/library.ts", knows: "one dlopen table, ABI check, CPU level" },
  ],
  [{ title: "kernels", where: "zig-kernels/", knows: "matmul, repack, packed, attention, norm, rope, quant, pool: numbers and pointers" }],
];

/** Beside src/: may import anything; nothing in src/ imports them. */
const BESIDE: Box[] = [
  { title: "bench/", where: "suite, kernels, speculative, …", knows: "" },
  { title: "test/", where: "bun test, one folder per layer", knows: "" },
  { title: "examples/", where: "bun examples/NAME.ts", knows: "" },
];

const W = 1000;
const MAIN_W = 700;
const ROW_H = 64;
const GAP = 14;
const PAD = 20;
const TOP = 56;
const FONT = "ui-sans-serif, system-ui, -apple-system, 'Segoe UI', sans-serif";
const MONO = "ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace";

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function box(x: number, y: number, w: number, h: number, b: Box, fill: string): string {
  const lines = [
    `  <rect x="${x}" y="${y}" width="${w}" height="${h}" rx="6" fill="${fill}" stroke="#4a5568" stroke-width="1.2"/>`,
    `  <text x="${x + 10}" y="${y + 20}" font-family="${FONT}" font-size="14" font-weight="700" fill="#1a202c">${esc(b.title)}</text>`,
    `  <text x="${x + 10}" y="${y + 38}" font-family="${MONO}" font-size="11" fill="#2d3748">${esc(b.where)}</text>`,
  ];
  if (b.knows) lines.push(`  <text x="${x + 10}" y="${y + 55}" font-family="${FONT}" font-size="11" fill="#4a5568">${esc(b.knows)}</text>`);
  return lines.join("\n");
}

export function draw(): string {
  const height = TOP + LAYERS.length * (ROW_H + GAP) - GAP + PAD + 24;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}">`,
    `  <rect width="${W}" height="${height}" fill="#ffffff"/>`,
    `  <text x="${PAD}" y="30" font-family="${FONT}" font-size="18" font-weight="700" fill="#1a202c">kiln: layers, bottom to top (imports point down only)</text>`,
  ];
  const fills = ["#ebf8ff", "#e6fffa", "#f0fff4", "#fffff0", "#fffaf0", "#fff5f5"];
  const left = PAD + 30;
  const mainW = MAIN_W - left;
  LAYERS.forEach((row, i) => {
    const y = TOP + i * (ROW_H + GAP);
    const w = (mainW - (row.length - 1) * GAP) / row.length;
    row.forEach((b, j) => out.push(box(left + j * (w + GAP), y, w, ROW_H, b, fills[i % fills.length]!)));
  });
  // The import direction: one arrow down the left edge.
  const y0 = TOP + 8;
  const y1 = TOP + LAYERS.length * (ROW_H + GAP) - GAP - 8;
  out.push(`  <line x1="${PAD + 12}" y1="${y0}" x2="${PAD + 12}" y2="${y1 - 10}" stroke="#2d3748" stroke-width="2"/>`);
  out.push(`  <polygon points="${PAD + 6},${y1 - 12} ${PAD + 18},${y1 - 12} ${PAD + 12},${y1}" fill="#2d3748"/>`);
  out.push(`  <text x="${PAD + 8}" y="${(y0 + y1) / 2}" font-family="${FONT}" font-size="11" fill="#2d3748" transform="rotate(-90 ${PAD + 8} ${(y0 + y1) / 2})" text-anchor="middle">imports</text>`);
  // Beside src/.
  const bx = MAIN_W + GAP + 10;
  const bw = W - bx - PAD;
  out.push(`  <text x="${bx}" y="${TOP - 8}" font-family="${FONT}" font-size="12" font-weight="700" fill="#1a202c">beside src/ (may import anything)</text>`);
  BESIDE.forEach((b, i) => out.push(box(bx, TOP + i * (ROW_H - 16 + GAP), bw, ROW_H - 16, b, "#f7fafc")));
  const noteY = TOP + BESIDE.length * (ROW_H - 16 + GAP) + 12;
  out.push(`  <text x="${bx}" y="${noteY}" font-family="${FONT}" font-size="11" fill="#4a5568">The package ships src/ and the</text>`);
  out.push(`  <text x="${bx}" y="${noteY + 15}" font-family="${FONT}" font-size="11" fill="#4a5568">prebuilt kernel libraries only.</text>`);
  out.push(`  <text x="${PAD}" y="${height - 14}" font-family="${FONT}" font-size="11" fill="#718096">Drawn by scripts/draw-architecture.ts from its LAYERS table; docs/architecture.md explains each layer.</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}

if (import.meta.main) {
  const path = join(import.meta.dir, "..", "docs", "architecture.svg");
  const svg = draw();
  if (process.argv.includes("--check")) {
    let have = "";
    try {
      have = readFileSync(path, "utf8");
    } catch {}
    if (have !== svg) {
      console.error(`${path} is not what scripts/draw-architecture.ts draws: run \`bun scripts/draw-architecture.ts\``);
      process.exit(1);
    }
    console.log(`${path} is up to date`);
  } else {
    writeFileSync(path, svg);
    console.log(`wrote ${path}`);
  }
}
