/**
 * The ratio chart of the results page: one horizontal bar per (workload, metric, peer), Mercury's median over the
 * peer's on a log scale around 1, green where Mercury did better and red where it did worse. Plain SVG, no library.
 */

export interface ChartBar {
  readonly label: string;
  /** Mercury / peer. */
  readonly ratio: number;
  readonly mercuryBetter: boolean;
}

const WIDTH = 860;
const LABEL_WIDTH = 380;
const PLOT_LEFT = LABEL_WIDTH + 10;
const PLOT_RIGHT = WIDTH - 80;
const ROW_HEIGHT = 22;
const TOP = 56;
const BOTTOM = 40;
const GREEN = '#2e7d32';
const RED = '#c62828';

export function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
}

/** The log10 domain: symmetric around 1, covering every ratio, at least 0.5..2, at most 1e-4..1e4. */
export function chartDomain(ratios: readonly number[]): number {
  const finite = ratios.filter((value) => Number.isFinite(value) && value > 0);
  const extent = Math.max(Math.log10(2), ...finite.map((value) => Math.abs(Math.log10(value))));
  return Math.min(4, Math.ceil(extent * 4) / 4);
}

function ratioText(value: number): string {
  return value >= 10 ? `${Math.round(value)}x` : value >= 1 ? `${value.toFixed(2)}x` : `${value.toPrecision(2)}x`;
}

/** A power of ten (or 2, 1/2) as a short exact label: 10 ** -4 is 0.00009999999999999999 in floating point. */
export function tickText(tick: number): string {
  const exponent = Math.round(Math.log10(tick));
  if (Math.abs(tick - 10 ** exponent) > 1e-9 * tick) return `${tick}x`;
  return exponent >= 0 ? `${'1'.padEnd(exponent + 1, '0')}x` : `0.${'0'.repeat(-exponent - 1)}1x`;
}

export function renderRatioChart(title: string, bars: readonly ChartBar[]): string {
  const shown = bars.filter((bar) => Number.isFinite(bar.ratio) && bar.ratio > 0);
  const domain = chartDomain(shown.map((bar) => bar.ratio));
  const x = (value: number): number => {
    const clamped = Math.max(-domain, Math.min(domain, Math.log10(value)));
    return PLOT_LEFT + ((clamped + domain) / (2 * domain)) * (PLOT_RIGHT - PLOT_LEFT);
  };
  const height = TOP + shown.length * ROW_HEIGHT + BOTTOM;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="10" y="40" fill="#444">Mercury's median / the peer's, log scale. <tspan fill="${GREEN}">Green: Mercury better</tspan>; <tspan fill="${RED}">red: Mercury worse</tspan> (for latency, below 1 is better).</text>`,
  ];
  // Ticks at powers of ten, and at 2 and 1/2 when the domain is small.
  const ticks = new Set<number>();
  for (let exponent = -Math.floor(domain); exponent <= Math.floor(domain); exponent++) ticks.add(10 ** exponent);
  if (domain < 1.5) for (const value of [0.5, 2]) ticks.add(value);
  for (const tick of [...ticks].sort((a, b) => a - b)) {
    const tx = x(tick).toFixed(1);
    parts.push(`<line x1="${tx}" y1="${TOP - 6}" x2="${tx}" y2="${height - BOTTOM + 4}" stroke="${tick === 1 ? '#000' : '#ddd'}"/>`);
    parts.push(`<text x="${tx}" y="${height - BOTTOM + 18}" text-anchor="middle" font-size="10" fill="#444">${tickText(tick)}</text>`);
  }
  shown.forEach((bar, index) => {
    const y = TOP + index * ROW_HEIGHT;
    const from = x(1);
    const to = x(bar.ratio);
    const color = bar.mercuryBetter ? GREEN : RED;
    parts.push(`<text x="${LABEL_WIDTH}" y="${y + 15}" text-anchor="end">${escapeXml(bar.label)}</text>`);
    parts.push(`<rect x="${Math.min(from, to).toFixed(1)}" y="${y + 4}" width="${Math.max(1, Math.abs(to - from)).toFixed(1)}" height="${ROW_HEIGHT - 8}" fill="${color}"/>`);
    // The figures stand in their own column right of the plot, where no bar can run into them.
    parts.push(`<text x="${PLOT_RIGHT + 10}" y="${y + 15}" fill="${color}">${ratioText(bar.ratio)}</text>`);
  });
  if (shown.length === 0) parts.push(`<text x="${PLOT_LEFT}" y="${TOP + 15}">no ratios measured</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
