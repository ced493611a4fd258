/**
 * The speculative depth planner: given measured forward costs and acceptance, it drafts deep
 * where drafts pay, not at all where they cannot, and keeps probing rarely.
 */
import { describe, expect, test } from "bun:test";
import { DepthPlanner } from "../../src/runtime/speculative";

/** Feeds `steps` steps to the planner with a cost table and a per-position acceptance rule. */
function simulate(p: DepthPlanner, o: { steps: number; cost: (rows: number) => number; accepts: (i: number) => boolean; limit?: number; free?: boolean; draftMs?: number }) {
  const depths: number[] = [];
  for (let s = 0; s < o.steps; s++) {
    const k = p.choose(o.limit ?? p.maxDraft, "k", o.free ?? true);
    depths.push(k);
    let kept = 0;
    while (kept < k && o.accepts(kept)) kept++;
    p.observe(k + 1, o.cost(k + 1), k, kept, k * (o.draftMs ?? 0), "k");
  }
  return depths;
}

describe("DepthPlanner", () => {
  test("measures plain steps first, then drafts deep when every draft is accepted and rows are cheap", () => {
    const p = new DepthPlanner(10, 1);
    const depths = simulate(p, { steps: 60, cost: (n) => 10 + 1 * (n - 1), accepts: () => true });
    expect(depths.slice(0, 2)).toEqual([0, 0]);
    expect(depths.slice(-10).every((k) => k === 10)).toBe(true);
    expect(p.alpha("k", 0)).toBeGreaterThan(0.9);
  });

  test("never drafts when the first extra row costs as much as a whole step (break-even above 100%)", () => {
    const p = new DepthPlanner(8, 1);
    const depths = simulate(p, { steps: 200, cost: (n) => 10 * n, accepts: () => true, free: false, draftMs: 1 });
    // One drafting step measures the draft's cost; after that, no step drafts and no probe is made.
    expect(depths.filter((k) => k > 0).length).toBeLessThanOrEqual(1);
    expect(p.breakEvenAcceptance()!).toBeGreaterThan(1);
  });

  test("stops drafting when drafts are rejected, and probes ever more rarely", () => {
    const p = new DepthPlanner(6, 1);
    const depths = simulate(p, { steps: 400, cost: (n) => 10 + 4 * (n - 1), accepts: () => false });
    const drafting = depths.map((k, i) => (k > 0 ? i : -1)).filter((i) => i >= 0);
    // Probes only: gaps grow (8, 16, 32, ... plain steps between them).
    expect(drafting.length).toBeLessThan(12);
    const gaps = drafting.slice(1).map((i, j) => i - drafting[j]!);
    expect(gaps.at(-1)!).toBeGreaterThan(gaps[0]!);
    expect(p.alpha("k", 0)).toBeLessThan(0.2);
  });

  test("a middling acceptance picks an intermediate depth that maximizes expected tokens per ms", () => {
    const p = new DepthPlanner(10, 1);
    // Position-dependent acceptance: the first three drafts are always right, the fourth never.
    const depths = simulate(p, { steps: 150, cost: (n) => 10 + 2 * (n - 1), accepts: (i) => i < 3 });
    const tail = depths.slice(-20);
    // E(3) = 4 tokens for 16 ms beats k = 0 (1 per 10 ms) and k ≥ 4 (4 tokens for ≥ 18 ms).
    expect(tail.filter((k) => k === 3).length).toBeGreaterThanOrEqual(15);
  });

  test("break-even acceptance is (T(2) + d) / T(1) − 1 from the measured costs", () => {
    const p = new DepthPlanner(4, 1);
    expect(p.breakEvenAcceptance()).toBeUndefined();
    for (let i = 0; i < 5; i++) p.observe(1, 10, 0, 0, 0);
    for (let i = 0; i < 5; i++) p.observe(2, 14, 1, 1, 2);
    expect(p.forwardMs(1)).toBe(10);
    expect(p.forwardMs(2)).toBe(14);
    expect(p.breakEvenAcceptance()).toBeCloseTo((14 + 2) / 10 - 1, 6);
    // Between measured sizes: linear; beyond the largest: the last segment's slope.
    p.observe(4, 20, 3, 3, 0);
    p.observe(4, 20, 3, 3, 0);
    expect(p.forwardMs(3)).toBeCloseTo(17, 6);
    expect(p.forwardMs(6)).toBeCloseTo(26, 6); // 20 + 3·(20 − 14)/2
  });
});
