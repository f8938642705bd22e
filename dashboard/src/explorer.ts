// The tag explorer: pick tags and a range; a chart that asks /api/v1/series again for the
// visible range at every zoom or pan, with max_points = its plot's width in CSS pixels, so a
// year of 1 Hz data comes as a few hundred kilobytes with its peaks kept (the API's
// downsample); the visible range exported as CSV.

import uPlot from "uplot";
import type { Api } from "./api";
import { h, replace } from "./dom";
import { type Agg, csv, panned, plan, type Plan, seriesQuery, visibleRows, zoomed } from "./explore";
import { clock } from "./format";
import type { EquipmentTree, SeriesPage, TagOut } from "./types";

const NUMERIC = new Set(["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]);
const RANGES: [string, number][] = [
  ["Last hour", 3600],
  ["Last 24 hours", 86400],
  ["Last 7 days", 7 * 86400],
  ["Last 30 days", 30 * 86400],
  ["Last 365 days", 365 * 86400],
];
const COLOURS = ["#0b57d0", "#a4161a", "#0b6b2f", "#7a4b00", "#4b3b8f", "#3d4a5c"];
/** Marks and measures the bench reads (bench/dashboard_bench.py). */
export const ZOOM_START = "explorer:zoom-start";
export const ZOOM = "explorer:zoom";

type Aligned = uPlot.AlignedData;

export class ExplorerPage {
  private zoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
  private tags: TagOut[] = [];
  private shown: TagOut[] = [];
  private chart: uPlot | null = null;
  private asked = 0;
  private quiet = false;
  private measuring = false;
  private drawPending = false;
  private lastPlan: Plan | null = null;
  private readonly picker = h("select", { id: "explorer-tags", multiple: true, size: 8 });
  private readonly range = h("select", { id: "explorer-range" });
  private readonly agg = h("select", { id: "explorer-agg" });
  private readonly status = h("p", { id: "explorer-status", class: "muted", role: "status" });
  private readonly holder = h("div", { class: "chart explorer-chart" });
  private readonly controls = h("div", { class: "chart-controls", role: "group", "aria-label": "Zoom and pan" });
  private readonly exportButton = h("button", { type: "button", id: "explorer-export", disabled: true }, "Export visible range as CSV");
  private resized: ReturnType<typeof setTimeout> | null = null;
  // The chart takes a new width at once; it asks for as many points as it is wide once the
  // resizing has settled.
  private readonly resizing = new ResizeObserver(() => {
    if (this.chart === null || Math.abs(this.chartWidth() - this.chart.width) < 1) return;
    this.chart.setSize({ width: this.chartWidth(), height: this.chart.height });
    if (this.resized !== null) clearTimeout(this.resized);
    this.resized = setTimeout(() => {
      this.resized = null;
      this.load().catch(this.onError);
    }, 150);
  });

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly onError: (error: unknown) => void,
  ) {}

  zone(): string {
    return this.zoneName;
  }

  async start(): Promise<void> {
    document.title = "Tag explorer: Plantwire";
    for (const [label, seconds] of RANGES) this.range.appendChild(h("option", { value: seconds }, label));
    this.range.value = String(86400);
    for (const [value, label] of [
      ["max", "Highest in each bucket (peaks)"],
      ["min", "Lowest in each bucket"],
      ["avg", "Average of each bucket"],
    ] as const) {
      this.agg.appendChild(h("option", { value }, label));
    }
    const form = h(
      "form",
      { class: "explorer-form", "aria-label": "What to chart" },
      h("div", {}, h("label", { for: "explorer-tags" }, "Tags"), this.picker),
      h(
        "div",
        {},
        h("label", { for: "explorer-range" }, "Period"),
        this.range,
        h("label", { for: "explorer-agg" }, "Long periods show"),
        this.agg,
        h("button", { type: "submit", id: "explorer-show" }, "Show"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.show().catch(this.onError);
    });
    const button = (id: string, label: string, act: (from: number, to: number) => [number, number]): HTMLButtonElement => {
      const b = h("button", { type: "button", id }, label);
      b.addEventListener("click", () => {
        const x = this.chart?.scales.x;
        if (x?.min === undefined || x.max === undefined) return;
        const [from, to] = act(x.min, x.max);
        this.chart?.setScale("x", { min: from, max: to });
      });
      return b;
    };
    const now = (): number => Date.now() / 1000;
    replace(
      this.controls,
      button("explorer-earlier", "◀ Earlier", (f, t) => panned(f, t, -0.5, now())),
      button("explorer-in", "Zoom in", (f, t) => zoomed(f, t, 0.5)),
      button("explorer-out", "Zoom out", (f, t) => zoomed(f, t, 2)),
      button("explorer-later", "Later ▶", (f, t) => panned(f, t, 0.5, now())),
      this.exportButton,
    );
    this.exportButton.addEventListener("click", () => this.exportCsv());
    replace(
      this.root,
      h("h1", {}, "Tag explorer"),
      form,
      h(
        "section",
        { "aria-labelledby": "explorer-chart-heading" },
        h("h2", { id: "explorer-chart-heading" }, "Chart"),
        h("p", { class: "muted" }, "Drag across the chart to zoom in; double-click to see all that was loaded."),
        this.controls,
        this.holder,
        this.status,
      ),
    );
    const [tree, tags] = await Promise.all([
      this.api.get<EquipmentTree>("/api/v1/equipment"),
      this.api.all<TagOut, "items">("/api/v1/tags", "items", { limit: 1000 }),
    ]);
    this.zoneName = tree.sites[0]?.time_zone ?? this.zoneName;
    this.tags = tags.filter((tag) => NUMERIC.has(tag.data_type));
    replace(
      this.picker,
      ...this.tags.map((tag, index) => h("option", { value: index }, `${tag.tag} (${tag.agent})`)),
    );
    replace(this.status, this.tags.length === 0 ? "No numeric tags stored yet." : `Times in ${this.zoneName}. Pick tags and a range.`);
    this.resizing.observe(this.root);
  }

  stop(): void {
    this.resizing.disconnect();
    if (this.resized !== null) clearTimeout(this.resized);
    this.chart?.destroy();
    this.chart = null;
  }

  async reload(): Promise<void> {
    if (this.chart !== null) await this.load();
  }

  onEvent(): void {
    // Nothing live: the chart shows the range asked for.
  }

  /** Chart the picked tags over the picked range. */
  async show(): Promise<void> {
    this.shown = Array.from(this.picker.selectedOptions, (o) => this.tags[Number(o.value)]).filter(
      (tag): tag is TagOut => tag !== undefined,
    );
    this.chart?.destroy();
    this.chart = null;
    if (this.shown.length === 0) {
      replace(this.holder);
      replace(this.status, "Pick at least one tag.");
      this.exportButton.disabled = true;
      return;
    }
    const to = Date.now() / 1000;
    const from = to - Number(this.range.value);
    const at = (seconds: number): string => clock(new Date(seconds * 1000).toISOString(), this.zoneName, true);
    const empty: Aligned = [[], ...this.shown.map(() => [])];
    this.quiet = true;
    this.holder.setAttribute("role", "img");
    this.holder.setAttribute("aria-label", `Chart of ${this.shown.map((t) => t.tag).join(", ")}`);
    this.chart = new uPlot(
      {
        width: this.chartWidth(),
        height: 320,
        scales: { x: { time: true, min: from, max: to } },
        series: [
          { label: "Time", value: (_u, v) => (v === null ? "–" : at(v)) },
          ...this.shown.map((tag, i) => ({ label: tag.tag, stroke: COLOURS[i % COLOURS.length] ?? "#000", width: 1.5, spanGaps: false })),
        ],
        // Dates alone over days (they would overlap with times), wall-clock times within.
        axes: [
          {
            values: (u, splits) => {
              const span = (u.scales.x?.max ?? 0) - (u.scales.x?.min ?? 0);
              return splits.map((s) => (span > 2 * 86400 ? at(s).slice(0, 10) : at(s).slice(11)));
            },
            space: 90,
          },
          {},
        ],
        cursor: { drag: { x: true, y: false } },
        hooks: {
          setScale: [(_u, key) => this.zoomedTo(key)],
          draw: [() => this.drawn()],
        },
      },
      empty,
      this.holder,
    );
    this.chart.setScale("x", { min: from, max: to });
    // uPlot lays the plot out (and reports its first scales) in a microtask: its width is
    // known from the next frame, and only then is there something to ask for.
    await new Promise((resolve) => requestAnimationFrame(resolve));
    this.quiet = false;
    await this.load();
  }

  private zoomedTo(key: string): void {
    if (key !== "x" || this.quiet) return;
    performance.clearMarks(ZOOM_START);
    performance.mark(ZOOM_START);
    this.measuring = true;
    this.load().catch(this.onError);
  }

  /** The zoom's measure ends when the chart has drawn the new data (uPlot draws in a
   * microtask after setData). */
  private drawn(): void {
    if (!this.drawPending) return;
    this.drawPending = false;
    performance.measure(ZOOM, ZOOM_START);
  }

  /** The plot's width in CSS pixels: as many points as it can show. */
  private plotWidth(): number {
    return Math.round(this.chart?.over.getBoundingClientRect().width ?? this.chartWidth());
  }

  private chartWidth(): number {
    return Math.max(280, Math.floor(this.holder.clientWidth || this.root.clientWidth - 32));
  }

  /** Ask for the visible range again; a newer request wins over an older one. */
  private async load(again = false): Promise<void> {
    const chart = this.chart;
    const x = chart?.scales.x;
    if (chart === null || x?.min === undefined || x.max === undefined) return;
    const asked = ++this.asked;
    const [min, max] = [x.min, x.max];
    const p = plan(min, max, this.plotWidth(), this.agg.value as Agg);
    replace(this.status, "Loading…");
    const pages = await Promise.all(
      this.shown.map((tag) => this.api.get<SeriesPage>("/api/v1/series", seriesQuery(p, tag.tag, tag.agent))),
    );
    if (asked !== this.asked || chart !== this.chart) return; // a newer zoom is on its way
    const tables: Aligned[] = pages.map((page) => {
      const xs: number[] = [];
      const ys: (number | null)[] = [];
      for (const bucket of page.buckets ?? []) {
        xs.push(Date.parse(bucket.start) / 1000);
        ys.push(typeof bucket.value === "number" ? bucket.value : null);
      }
      for (const reading of page.readings ?? []) {
        xs.push(Date.parse(reading.ts) / 1000);
        ys.push(typeof reading.value === "number" ? reading.value : typeof reading.value === "boolean" ? Number(reading.value) : null);
      }
      return [xs, ys];
    });
    const data = tables.length === 1 ? (tables[0] as Aligned) : uPlot.join(tables);
    this.lastPlan = p;
    this.quiet = true;
    this.drawPending = this.measuring;
    this.measuring = false;
    try {
      chart.setData(data, false);
      chart.setScale("x", { min, max });
    } finally {
      this.quiet = false;
    }
    const points = pages.reduce((sum, page) => sum + page.count, 0);
    const how = p.interval === null ? "raw readings" : `${p.agg} of ${p.interval} buckets`;
    const zone = this.zoneName;
    const edge = (s: number): string => clock(new Date(s * 1000).toISOString(), zone, true);
    replace(
      this.status,
      `${edge(min)} to ${edge(max)} (${zone}): ${points} points of ${how}, asked for ${p.maxPoints} per tag`,
      pages.some((page) => page.downsampled) ? " (downsampled, peaks kept)." : ".",
    );
    this.holder.setAttribute("data-max-points", String(p.maxPoints));
    this.exportButton.disabled = false;
    if (!again) {
      // The y axis takes the width its new labels need, so the plot may now be narrower or
      // wider than what was asked for: ask once more for as many points as it is wide.
      await new Promise((resolve) => requestAnimationFrame(resolve));
      if (asked === this.asked && chart === this.chart && this.plotWidth() !== p.maxPoints) await this.load(true);
    }
  }

  /** The visible range of what the series API answered, as a CSV download. */
  private exportCsv(): void {
    const chart = this.chart;
    const x = chart?.scales.x;
    if (chart === null || x?.min === undefined || x.max === undefined) return;
    const how = this.lastPlan?.interval ? ` (${this.lastPlan.agg} per ${this.lastPlan.interval})` : "";
    const rows = visibleRows(
      this.shown.map((tag) => `${tag.agent}:${tag.tag}${how}`),
      chart.data as unknown as (number | null)[][],
      x.min,
      x.max,
    );
    const blob = new Blob([csv(rows)], { type: "text/csv;charset=utf-8" });
    const link = h("a", {
      href: URL.createObjectURL(blob),
      download: `plantwire-${new Date(x.min * 1000).toISOString().replaceAll(":", "")}.csv`,
    });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }
}
