/**
 * A small SVG line-chart writer (no dependencies): one or more panels side by side, each with
 * axes, "nice" y ticks from 0, an optional log2 x axis, one polyline with point markers per
 * series (a null y breaks the line), and a shared legend.
 */

export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  /** [x, y]; y null = no measurement there. */
  points: [number, number | null][];
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Place x on a log2 scale (context lengths). */
  logX?: boolean;
  /** x values to label; default: every x that occurs. */
  xTicks?: number[];
  /** Tick label for an x value; default String(x). */
  xFormat?: (x: number) => string;
}

export interface ChartOptions {
  title?: string;
  panelWidth?: number;
  panelHeight?: number;
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

/** Round tick values covering [0, max]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
export function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks.at(-1)! < max) ticks.push(Number((ticks.at(-1)! + step).toPrecision(12)));
  return ticks;
}

const num = (x: number) => (Math.round(x * 10) / 10).toString();

function tickLabel(v: number): string {
  if (v >= 1000 && v % 1000 === 0) return `${v / 1000}k`;
  return Number.isInteger(v) ? String(v) : v.toPrecision(3);
}

export function lineChart(panels: Panel[], o: ChartOptions = {}): string {
  if (panels.length === 0) throw new Error("lineChart: no panels");
  const pw = o.panelWidth ?? 440;
  const ph = o.panelHeight ?? 300;
  const titleH = o.title ? 30 : 0;
  const names: { name: string; color: string; dashed: boolean }[] = [];
  for (const p of panels) for (const s of p.series) if (!names.some((n) => n.name === s.name)) names.push({ name: s.name, color: s.color, dashed: !!s.dashed });
  const legendH = 26 * Math.ceil(names.length / 4) + 8;
  const width = pw * panels.length;
  const height = titleH + ph + legendH;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  if (o.title) out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(o.title)}</text>`);
  panels.forEach((p, i) => out.push(panelSvg(p, i * pw, titleH, pw, ph)));
  // legend
  const ly = titleH + ph + 8;
  const colW = width / Math.min(4, names.length);
  names.forEach((n, i) => {
    const x = (i % 4) * colW + 16;
    const y = ly + Math.floor(i / 4) * 26 + 10;
    out.push(`<line x1="${num(x)}" y1="${y}" x2="${num(x + 28)}" y2="${y}" stroke="${escapeXml(n.color)}" stroke-width="2.5"${n.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    out.push(`<circle cx="${num(x + 14)}" cy="${y}" r="3.5" fill="${escapeXml(n.color)}"/>`);
    out.push(`<text x="${num(x + 36)}" y="${y + 4}">${escapeXml(n.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

function panelSvg(p: Panel, x0: number, y0: number, w: number, h: number): string {
  const m = { l: 62, r: 18, t: 28, b: 44 };
  const iw = w - m.l - m.r;
  const ih = h - m.t - m.b;
  const xs = [...new Set(p.series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
  const ticksX = p.xTicks ?? xs;
  const allX = [...xs, ...ticksX];
  const tx = (x: number) => (p.logX ? Math.log2(x) : x);
  const lo = Math.min(...allX.map(tx));
  const hi = Math.max(...allX.map(tx));
  const span = hi - lo || 1;
  const px = (x: number) => x0 + m.l + (allX.length < 2 || hi === lo ? iw / 2 : ((tx(x) - lo) / span) * iw);
  const ys = p.series.flatMap((s) => s.points.map(([, y]) => y)).filter((y): y is number => typeof y === "number" && Number.isFinite(y));
  const yTicks = niceTicks(Math.max(0, ...ys) * 1.05);
  const yMax = yTicks.at(-1)!;
  const py = (y: number) => y0 + m.t + ih - (y / yMax) * ih;
  const out: string[] = [`<g>`];
  out.push(`<text x="${num(x0 + m.l + iw / 2)}" y="${y0 + 18}" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(p.title)}</text>`);
  for (const t of yTicks) {
    out.push(`<line x1="${num(x0 + m.l)}" y1="${num(py(t))}" x2="${num(x0 + m.l + iw)}" y2="${num(py(t))}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${num(x0 + m.l - 6)}" y="${num(py(t) + 4)}" text-anchor="end">${escapeXml(tickLabel(t))}</text>`);
  }
  for (const t of ticksX) {
    out.push(`<line x1="${num(px(t))}" y1="${num(y0 + m.t + ih)}" x2="${num(px(t))}" y2="${num(y0 + m.t + ih + 5)}" stroke="#333"/>`);
    out.push(`<text x="${num(px(t))}" y="${num(y0 + m.t + ih + 18)}" text-anchor="middle">${escapeXml((p.xFormat ?? tickLabel)(t))}</text>`);
  }
  out.push(`<line x1="${num(x0 + m.l)}" y1="${num(y0 + m.t)}" x2="${num(x0 + m.l)}" y2="${num(y0 + m.t + ih)}" stroke="#333"/>`);
  out.push(`<line x1="${num(x0 + m.l)}" y1="${num(y0 + m.t + ih)}" x2="${num(x0 + m.l + iw)}" y2="${num(y0 + m.t + ih)}" stroke="#333"/>`);
  out.push(`<text x="${num(x0 + m.l + iw / 2)}" y="${num(y0 + h - 8)}" text-anchor="middle">${escapeXml(p.xLabel)}</text>`);
  out.push(`<text transform="translate(${num(x0 + 16)} ${num(y0 + m.t + ih / 2)}) rotate(-90)" text-anchor="middle">${escapeXml(p.yLabel)}</text>`);
  for (const s of p.series) {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    // A null y breaks the line into runs.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) out.push(`<polyline fill="none" stroke="${escapeXml(s.color)}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 4"' : ""} points="${run.join(" ")}"><title>${escapeXml(s.name)}</title></polyline>`);
      run = [];
    };
    for (const [x, y] of pts) {
      if (typeof y !== "number" || !Number.isFinite(y)) {
        flush();
        continue;
      }
      run.push(`${num(px(x))},${num(py(y))}`);
      out.push(`<circle cx="${num(px(x))}" cy="${num(py(y))}" r="3.5" fill="${escapeXml(s.color)}"><title>${escapeXml(`${s.name}: ${y.toFixed(1)} at ${x}`)}</title></circle>`);
    }
    flush();
  }
  out.push(`</g>`);
  return out.join("\n");
}
