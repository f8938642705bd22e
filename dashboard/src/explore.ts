// The tag explorer's arithmetic: what to ask /api/v1/series for a visible range, how to zoom
// and pan, and the CSV of what is shown. Pure functions, tested.

import type { Query } from "./api";

/** Up to this long a range is asked for as raw readings (downsampled by the API): 21,600
 * readings of a 1 Hz tag, where 1-minute buckets would give fewer points than a chart has pixels. */
export const RAW_MOST_S = 6 * 3600;
/** Bucket lengths for longer ranges: whole minutes or hours, so the API answers from its
 * per-minute or per-hour rollups rather than from the raw readings. */
export const STEPS: [number, string][] = [
  [60, "PT1M"],
  [300, "PT5M"],
  [900, "PT15M"],
  [3600, "PT1H"],
  [6 * 3600, "PT6H"],
];
/** Buckets per CSS pixel at most before the API downsamples them to the width. */
export const BUCKETS_PER_PIXEL = 4;
export type Agg = "max" | "min" | "avg";

export interface Plan {
  from: number;
  to: number;
  maxPoints: number;
  interval: string | null;
  agg: Agg | null;
}

/** What to ask for a range [from, to) in Unix seconds drawn `width` CSS pixels wide: as many
 * points as pixels, raw for short ranges, else buckets of the smallest step that keeps them
 * within BUCKETS_PER_PIXEL per pixel, with the range widened to whole steps. */
export function plan(from: number, to: number, width: number, agg: Agg): Plan {
  const maxPoints = Math.max(5, Math.round(width));
  const start = Math.floor(from);
  const end = Math.max(start + 1, Math.ceil(to));
  if (end - start <= RAW_MOST_S) return { from: start, to: end, maxPoints, interval: null, agg: null };
  const wanted = (end - start) / (maxPoints * BUCKETS_PER_PIXEL);
  const [step, interval] = STEPS.find(([seconds]) => seconds >= wanted) ?? (STEPS[STEPS.length - 1] as [number, string]);
  return {
    from: Math.floor(start / step) * step,
    to: Math.ceil(end / step) * step,
    maxPoints,
    interval,
    agg,
  };
}

/** The series API's query for a plan and a tag. */
export function seriesQuery(p: Plan, tag: string, agent: string): Query {
  return {
    tag,
    agent,
    from: new Date(p.from * 1000).toISOString(),
    to: new Date(p.to * 1000).toISOString(),
    max_points: p.maxPoints,
    interval: p.interval,
    agg: p.agg,
  };
}

/** A range `factor` times as long about the same middle (factor < 1 zooms in). */
export function zoomed(from: number, to: number, factor: number): [number, number] {
  const middle = (from + to) / 2;
  const half = ((to - from) * factor) / 2;
  return [middle - half, middle + half];
}

/** A range moved by `share` of its length (negative: earlier), never past `latest`. */
export function panned(from: number, to: number, share: number, latest: number): [number, number] {
  const length = to - from;
  const moved = Math.min(from + length * share, latest - length);
  return [moved, moved + length];
}

export type Cell = string | number | null;

const FORMULA = /^[=+\-@\t\r]/;

/** One CSV field (RFC 4180): quoted when it holds a comma, quote or line break, quotes
 * doubled. Text that a spreadsheet would take for a formula (= + - @, tab, CR first) gets a
 * leading apostrophe; numbers are the chart's own and are written as numbers, a minus sign
 * included, since a number cannot carry a formula. */
export function csvField(cell: Cell): string {
  if (cell === null) return "";
  if (typeof cell === "number") return Number.isFinite(cell) ? String(cell) : "";
  const text = FORMULA.test(cell) ? `'${cell}` : cell;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Rows as CSV text, CRLF line ends (RFC 4180). */
export function csv(rows: Cell[][]): string {
  return rows.map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

/** The visible part of aligned data (x in Unix seconds, then one column per tag) as CSV rows:
 * a header, then a row per x in [from, to] with its time in UTC (RFC 3339) and the values. */
export function visibleRows(
  header: string[],
  data: readonly (readonly (number | null | undefined)[])[],
  from: number,
  to: number,
): Cell[][] {
  const [xs = [], ...columns] = data;
  const rows: Cell[][] = [["time (UTC)", ...header]];
  xs.forEach((x, i) => {
    if (x === null || x === undefined || x < from || x > to) return;
    rows.push([new Date(x * 1000).toISOString(), ...columns.map((column) => column[i] ?? null)]);
  });
  return rows;
}
