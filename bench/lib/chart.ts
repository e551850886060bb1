/**
 * A hand-written SVG bar chart (no dependency): latency percentiles per path, one panel per
 * request rate, logarithmic y axis in milliseconds, each bar labelled with its value.
 */

export interface ChartSeries {
  label: string;
  color: string;
  /** one value per category; null = not measured */
  values: (number | null)[];
}

export interface ChartPanel {
  title: string;
  categories: string[];
  series: ChartSeries[];
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** 1-2-5 steps */
function niceSteps(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)) + 1; e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(Number(v.toPrecision(3)));
    }
  }
  return out;
}

function label(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toFixed(3);
}

export function latencySvg(o: { title: string; subtitle: string[]; yLabel: string; panels: ChartPanel[] }): string {
  const all = o.panels.flatMap((p) => p.series.flatMap((s) => s.values)).filter((v): v is number => v !== null && v > 0);
  const vmin = all.length ? Math.min(...all) : 0.1;
  const vmax = all.length ? Math.max(...all) : 10;
  // axis limits on the 1-2-5 grid around the data
  const grid = niceSteps(vmin / 10, vmax * 10);
  const lo = [...grid].reverse().find((g) => g <= vmin * 0.8) ?? vmin / 2;
  const hi = grid.find((g) => g >= vmax * 1.15) ?? vmax * 2;
  const ticks = niceSteps(lo, hi);

  const panelW = 430;
  const panelH = 300;
  const left = 64;
  const top = 58 + o.subtitle.length * 16;
  const gap = 40;
  const width = left + o.panels.length * panelW + (o.panels.length - 1) * gap + 20;
  const height = top + panelH + 96;
  const y = (v: number): number => top + panelH - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * panelH;

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-size="16" font-weight="bold">${esc(o.title)}</text>`,
  );
  o.subtitle.forEach((line, i) => parts.push(`<text x="${left}" y="${44 + i * 16}" fill="#444">${esc(line)}</text>`));

  o.panels.forEach((panel, pi) => {
    const x0 = left + pi * (panelW + gap);
    parts.push(`<g>`);
    parts.push(`<text x="${x0 + panelW / 2}" y="${top - 8}" text-anchor="middle" font-weight="bold">${esc(panel.title)}</text>`);
    // grid and y ticks
    for (const t of ticks) {
      const yy = y(t).toFixed(1);
      parts.push(`<line x1="${x0}" x2="${x0 + panelW}" y1="${yy}" y2="${yy}" stroke="#e3e3e3"/>`);
      if (pi === 0) parts.push(`<text x="${x0 - 6}" y="${Number(yy) + 4}" text-anchor="end" fill="#444">${String(t)}</text>`);
    }
    parts.push(`<line x1="${x0}" x2="${x0}" y1="${top}" y2="${top + panelH}" stroke="#888"/>`);
    parts.push(`<line x1="${x0}" x2="${x0 + panelW}" y1="${top + panelH}" y2="${top + panelH}" stroke="#888"/>`);
    const groupW = panelW / panel.categories.length;
    const barW = Math.min(34, (groupW - 16) / panel.series.length);
    panel.categories.forEach((cat, ci) => {
      const gx = x0 + ci * groupW + (groupW - barW * panel.series.length) / 2;
      panel.series.forEach((s, si) => {
        const v = s.values[ci];
        const bx = gx + si * barW;
        if (v === null || v === undefined || !(v > 0)) {
          parts.push(`<text x="${(bx + barW / 2).toFixed(1)}" y="${top + panelH - 4}" text-anchor="middle" font-size="9" fill="#999">n/a</text>`);
          return;
        }
        const by = y(Math.max(v, lo));
        parts.push(
          `<rect x="${(bx + 1).toFixed(1)}" y="${by.toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(top + panelH - by).toFixed(1)}" fill="${s.color}"><title>${esc(`${s.label} ${cat}: ${label(v)} ms`)}</title></rect>`,
          `<text x="${(bx + barW / 2).toFixed(1)}" y="${(by - 4).toFixed(1)}" text-anchor="middle" font-size="9" fill="#222">${label(v)}</text>`,
        );
      });
      parts.push(`<text x="${(x0 + ci * groupW + groupW / 2).toFixed(1)}" y="${top + panelH + 18}" text-anchor="middle">${esc(cat)}</text>`);
    });
    parts.push(`</g>`);
  });
  parts.push(`<text transform="translate(18 ${top + panelH / 2}) rotate(-90)" text-anchor="middle" fill="#444">${esc(o.yLabel)}</text>`);
  // legend
  const series = o.panels[0]?.series ?? [];
  let lx = left;
  const ly = top + panelH + 46;
  for (const s of series) {
    parts.push(`<rect x="${lx}" y="${ly - 10}" width="14" height="12" fill="${s.color}"/>`, `<text x="${lx + 20}" y="${ly}">${esc(s.label)}</text>`);
    lx += 28 + s.label.length * 7;
  }
  parts.push(`<text x="${left}" y="${ly + 24}" fill="#666" font-size="11">Latency from the scheduled send time to the last response byte (open loop); log scale; medians over the repetitions.</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
