/** The SVG chart writer: escaping, tick choice, panel geometry, null points breaking lines. */
import { describe, expect, test } from "bun:test";
import { escapeXml, lineChart, niceTicks } from "../../bench/svg";

describe("svg writer", () => {
  test("escapeXml escapes the five XML specials", () => {
    expect(escapeXml(`a<b>&"c'`)).toBe("a&lt;b&gt;&amp;&quot;c&apos;");
  });

  test("niceTicks: 1/2/5 steps from 0 covering the maximum", () => {
    expect(niceTicks(100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(47)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(niceTicks(0.9)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0)).toEqual([0, 1]);
    for (const max of [3, 17, 260, 1234, 99999]) {
      const t = niceTicks(max);
      expect(t[0]).toBe(0);
      expect(t.at(-1)!).toBeGreaterThanOrEqual(max);
      expect(t.length).toBeGreaterThanOrEqual(3);
      expect(t.length).toBeLessThanOrEqual(12);
    }
  });

  test("a two-panel chart: one polyline per unbroken series, markers, legend, escaped text", () => {
    const svg = lineChart(
      [
        { title: "Prefill <A&B>", xLabel: "tokens", yLabel: "tok/s", logX: true, series: [
          { name: "kiln", color: "#d00", points: [[512, 100], [2048, 80], [8192, 50]] },
          { name: "llama.cpp", color: "#00d", dashed: true, points: [[512, 90], [2048, null], [8192, 40], [16384, 30]] },
        ] },
        { title: "Decode", xLabel: "tokens", yLabel: "tok/s", series: [{ name: "kiln", color: "#d00", points: [[1, 5], [2, 6]] }] },
      ],
      { title: "Chart & title" },
    );
    expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
    expect(svg.trim().endsWith("</svg>")).toBe(true);
    expect(svg).toContain("Prefill &lt;A&amp;B&gt;");
    expect(svg).toContain("Chart &amp; title");
    expect(svg).not.toMatch(/<[^>]*<[^>]*>/); // no tag inside a tag: every text escaped
    // kiln (3 points) + llama.cpp broken by the null into [512] (no line) and [8192, 16384] + decode kiln
    expect(svg.match(/<polyline /g)!.length).toBe(3);
    // markers: 3 + 3 + 2 points with values, + 2 legend entries
    expect(svg.match(/<circle /g)!.length).toBe(10);
    expect(svg.match(/stroke-dasharray/g)!.length).toBe(2); // the dashed series' line and its legend
    // log2 x: 512→2048 and 2048→8192 are the same distance apart
    const xs = svg.match(/<polyline[^>]*points="([^"]+)"/)![1]!.split(" ").map((p) => Number(p.split(",")[0]));
    expect(Math.abs(xs[1]! - xs[0]! - (xs[2]! - xs[1]!))).toBeLessThan(0.2);
    // y: larger values are higher up (smaller y)
    const ys = svg.match(/<polyline[^>]*points="([^"]+)"/)![1]!.split(" ").map((p) => Number(p.split(",")[1]));
    expect(ys[0]!).toBeLessThan(ys[1]!);
    expect(ys[1]!).toBeLessThan(ys[2]!);
    const [w] = svg.match(/width="(\d+)"/)!.slice(1).map(Number);
    expect(w).toBe(880);
  });

  test("no panels is an error", () => {
    expect(() => lineChart([])).toThrow(/no panels/);
  });
});
