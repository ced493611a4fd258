/** docs/architecture.svg is what scripts/draw-architecture.ts draws from its layer table. */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { draw } from "../../scripts/draw-architecture";
import { ROOT } from "./markdown";

test("docs/architecture.svg is up to date with scripts/draw-architecture.ts", () => {
  const svg = readFileSync(join(ROOT, "docs", "architecture.svg"), "utf8");
  if (svg !== draw()) throw new Error("docs/architecture.svg differs from what scripts/draw-architecture.ts draws: run `bun scripts/draw-architecture.ts`");
  expect(svg.startsWith("<svg")).toBe(true);
});
