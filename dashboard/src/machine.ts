// A machine's page: its OEE for the current and previous shift with the working (the KPI API's
// own elements), today's state timeline, the downtime Pareto, good and scrap, and one process
// tag as a chart that asks for as many points as it is wide.

import uPlot from "uplot";
import { type Api, ApiError } from "./api";
import { type Child, h, replace } from "./dom";
import { clock, code, count, duration, percent } from "./format";
import type { SseEvent } from "./sse";
import { lookOf } from "./states";
import type {
  Downtime,
  MachineKpiReport,
  MachineOut,
  MachineStateBody,
  MachineStates,
  SeriesPage,
  StreamEvent,
  TagOut,
  Timeline,
} from "./types";

const NUMERIC = new Set(["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]);
const ELEMENTS: [keyof MachineKpiReport["total"]["working"]["elements"], string, "s" | "n"][] = [
  ["pot_s", "POT: planned operation time", "s"],
  ["pdot_s", "PDOT: planned down time", "s"],
  ["pbt_s", "PBT: planned busy time", "s"],
  ["apt_s", "APT: actual production time", "s"],
  ["asut_s", "ASUT: setup time", "s"],
  ["adet_s", "ADET: delay time", "s"],
  ["adot_s", "ADOT: down time (no orders)", "s"],
  ["unknown_s", "Planned time with no known state", "s"],
  ["ideal_s", "Ideal time for the quantity produced", "s"],
  ["pq", "PQ: produced quantity", "n"],
  ["gq", "GQ: good quantity", "n"],
  ["sq", "SQ: scrap quantity", "n"],
  ["fe", "FE: failure events", "n"],
];

type Shift = MachineKpiReport | string;

export class MachinePage {
  private zoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
  private chart: uPlot | null = null;
  private tags: TagOut[] = [];
  private pending: ReturnType<typeof setTimeout> | null = null;
  private readonly sections = {
    now: h("div", { class: "now" }),
    shifts: h("div"),
    timeline: h("div"),
    pareto: h("div"),
    chart: h("div", { class: "chart-area" }),
  };
  private readonly tagPicker = h("select", { id: "tag-picker" });
  private drawnWidth = 0;
  private resized: ReturnType<typeof setTimeout> | null = null;
  // A chart asks for as many points as it is wide: a new width is a new request.
  private readonly resizing = new ResizeObserver(() => {
    if (this.resized !== null) clearTimeout(this.resized);
    this.resized = setTimeout(() => {
      this.resized = null;
      if (this.chart !== null && Math.abs(this.width() - this.drawnWidth) >= 1) {
        this.drawChart().catch(this.onError);
      }
    }, 150);
  });

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly site: string,
    private readonly machine: string,
    private readonly onError: (error: unknown) => void,
  ) {
    this.tagPicker.addEventListener("change", () => {
      this.drawChart().catch(this.onError);
    });
  }

  zone(): string {
    return this.zoneName;
  }

  async start(): Promise<void> {
    const spec = await this.api.get<MachineOut>(
      `/api/v1/equipment/sites/${encodeURIComponent(this.site)}/machines/${encodeURIComponent(this.machine)}`,
    );
    const title = spec.spec.name ?? this.machine;
    document.title = `${title}: Plantwire`;
    const section = (id: string, heading: string, ...children: Child[]): HTMLElement =>
      h("section", { "aria-labelledby": id }, h("h2", { id }, heading), ...children);
    replace(
      this.root,
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Plant overview"), " › ", this.site),
      h("h1", {}, title),
      this.sections.now,
      section("shifts-heading", "OEE by shift", this.sections.shifts),
      section("timeline-heading", "Today's states", this.sections.timeline),
      section("pareto-heading", "Downtime today by reason", this.sections.pareto),
      section(
        "chart-heading",
        "Process tag",
        h("label", { for: "tag-picker" }, "Tag "),
        this.tagPicker,
        this.sections.chart,
      ),
    );
    await this.loadTags(spec);
    await this.reload();
    // When the page is usable: what bench/dashboard_bench.py reads.
    performance.mark("machine:usable");
    this.resizing.observe(this.sections.chart);
  }

  stop(): void {
    this.resizing.disconnect();
    this.chart?.destroy();
    if (this.pending !== null) clearTimeout(this.pending);
    if (this.resized !== null) clearTimeout(this.resized);
  }

  private width(): number {
    return Math.max(200, Math.floor(this.sections.chart.clientWidth || this.root.clientWidth));
  }

  async reload(): Promise<void> {
    await Promise.all([this.drawNow(), this.drawShifts(), this.drawTimeline(), this.drawPareto()]);
    await this.drawChart();
  }

  onEvent(event: SseEvent): void {
    if (event.event !== "machine.state") return;
    const data = JSON.parse(event.data) as StreamEvent<MachineStateBody>;
    if (data.body.site !== this.site || data.body.machine !== this.machine) return;
    if (this.pending !== null) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      Promise.all([this.drawNow(), this.drawTimeline()]).catch(this.onError);
    }, 300);
  }

  private query(extra: Record<string, string | number | boolean>): Record<string, string | number | boolean> {
    return { site: this.site, machine: this.machine, ...extra };
  }

  private async drawNow(): Promise<void> {
    const states = await this.api.get<MachineStates>("/api/v1/machine-states", { site: this.site });
    this.zoneName = states.time_zone;
    const now = states.machines.find((m) => m.machine === this.machine);
    if (now === undefined) return;
    const look = lookOf(now.since === null ? null : now.element);
    replace(
      this.sections.now,
      h(
        "p",
        { class: `state-line ${look.tone}`, "data-state": now.state_name ?? "unknown" },
        h("span", { class: "shape", "aria-hidden": "true" }, look.shape),
        " ",
        look.word,
        ": ",
        h("span", { class: "state-name" }, now.state_name ?? (now.state === null ? "no state yet" : `code ${code(now.state)}`)),
        now.since === null ? "" : ` since ${clock(now.since, this.zoneName)}`,
      ),
      now.reason === null || now.element === "production" ? null : h("p", {}, "Reason: ", h("span", { class: "reason-name" }, now.reason_name ?? `code ${code(now.reason)}`)),
      h("p", { class: "muted" }, `Times in ${this.zoneName}.`),
    );
  }

  private async shift(window: string): Promise<Shift> {
    try {
      return await this.api.get<MachineKpiReport>("/api/v1/kpis", this.query({ window }));
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) return error.detail || "No such shift.";
      throw error;
    }
  }

  private async drawShifts(): Promise<void> {
    const [current, previous] = await Promise.all([this.shift("current_shift"), this.shift("previous_shift")]);
    const shifts: [string, Shift][] = [
      ["Current shift", current],
      ["Previous shift", previous],
    ];
    const cell = (shift: Shift, value: (r: MachineKpiReport) => string, cls: string): HTMLElement =>
      h("td", { class: `num ${cls}` }, typeof shift === "string" ? "–" : value(shift));
    const row = (label: string, cls: string, value: (r: MachineKpiReport) => string): HTMLElement =>
      h("tr", {}, h("th", { scope: "row" }, label), ...shifts.map(([, s], i) => cell(s, value, `${cls} shift-${i}`)));
    const k = (r: MachineKpiReport) => r.total.kpis;
    const e = (r: MachineKpiReport) => r.total.working.elements;
    const table = h(
      "table",
      { class: "kpi-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Figure"),
          ...shifts.map(([label, s]) =>
            h(
              "th",
              { scope: "col" },
              label,
              h("br"),
              h("span", { class: "muted" }, typeof s === "string" ? s : `${clock(s.from, this.zoneName)} – ${clock(s.to, this.zoneName)}`),
            ),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        row("OEE", "oee-value", (r) => percent(k(r).oee)),
        row("Availability", "availability-value", (r) => percent(k(r).availability)),
        row("Performance", "effectiveness-value", (r) => percent(k(r).effectiveness)),
        row("Quality", "quality-value", (r) => percent(k(r).quality_ratio)),
        row("Good units", "good-value", (r) => count(e(r).gq)),
        row("Scrap units", "scrap-value", (r) => count(e(r).sq)),
        row("MTBF", "mtbf-value", (r) => duration(k(r).mtbf_s)),
        row("MTTR", "mttr-value", (r) => duration(k(r).mttr_s)),
      ),
    );
    const working = shifts.map(([label, s]) =>
      typeof s === "string"
        ? null
        : h(
            "details",
            { class: "working" },
            h("summary", {}, `How the ${label.toLowerCase()}'s figures were computed (${s.total.working.model})`),
            h(
              "table",
              {},
              h(
                "tbody",
                {},
                ...ELEMENTS.map(([key, label, unit]) => {
                  const value = s.total.working.elements[key];
                  return h(
                    "tr",
                    {},
                    h("th", { scope: "row" }, label),
                    h("td", { class: "num" }, unit === "s" ? duration(value) : count(value)),
                  );
                }),
              ),
            ),
            s.total.working.warnings.length === 0
              ? null
              : h("ul", { class: "warnings" }, ...s.total.working.warnings.map((w) => h("li", {}, `${w.code}: ${w.message}`))),
          ),
    );
    replace(this.sections.shifts, h("div", { class: "table-scroll" }, table), ...working);
  }

  private async drawTimeline(): Promise<void> {
    const timeline = await this.api.get<Timeline>("/api/v1/machine-states/timeline", this.query({ window: "today" }));
    const start = Date.parse(timeline.from);
    const length = Math.max(1, Date.parse(timeline.to) - start);
    const bar = h("div", { class: "timeline", "aria-hidden": "true" });
    for (const span of timeline.spans) {
      const look = lookOf(span.element);
      const block = h("div", { class: `span ${look.tone}`, title: `${span.state_name ?? code(span.state)}` });
      // CSSOM, not a style attribute: the policy refuses inline styles.
      block.style.left = `${((Date.parse(span.from) - start) / length) * 100}%`;
      block.style.width = `${((Date.parse(span.to) - Date.parse(span.from)) / length) * 100}%`;
      bar.appendChild(block);
    }
    const rows = timeline.spans.map((span) =>
      h(
        "tr",
        {},
        h("td", {}, clock(span.from, timeline.time_zone)),
        h("td", {}, span.ongoing ? "now" : clock(span.to, timeline.time_zone)),
        h("td", {}, h("span", { "aria-hidden": "true" }, lookOf(span.element).shape), " ", span.state_name ?? `code ${code(span.state)}`),
        h("td", {}, span.reason === null ? "" : (span.reason_name ?? `code ${code(span.reason)}`)),
      ),
    );
    replace(
      this.sections.timeline,
      h("p", { class: "muted" }, `From ${clock(timeline.from, timeline.time_zone)} to ${clock(timeline.to, timeline.time_zone)}; gaps are time with no known state.`),
      bar,
      h(
        "details",
        {},
        h("summary", {}, `Every span (${timeline.spans.length})`),
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, ...["From", "To", "State", "Reason"].map((n) => h("th", { scope: "col" }, n)))),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }

  private async drawPareto(): Promise<void> {
    const downtime = await this.api.get<Downtime>("/api/v1/downtime", this.query({ window: "today" }));
    if (downtime.by_reason.length === 0) {
      replace(this.sections.pareto, h("p", {}, "No downtime today."));
      return;
    }
    const items = downtime.by_reason.map((bar) => {
      const fill = h("span", { class: "pareto-fill", "aria-hidden": "true" });
      fill.style.width = `${Math.min(100, bar.share * 100)}%`;
      return h(
        "li",
        {},
        h("span", { class: "pareto-label" }, bar.label),
        h("span", { class: "pareto-bar" }, fill),
        h("span", { class: "num" }, `${duration(bar.seconds)} · ${bar.events} stops · ${percent(bar.share)}`),
      );
    });
    replace(this.sections.pareto, h("ol", { class: "pareto" }, ...items));
  }

  private async loadTags(spec: MachineOut): Promise<void> {
    const used = new Set(
      [spec.spec.state, spec.spec.reason, spec.spec.good, spec.spec.scrap, spec.spec.product]
        .filter((ref) => ref !== null && ref !== undefined)
        .map((ref) => ref?.tag),
    );
    const [device] = spec.spec.state.tag.split("/");
    const query: Record<string, string | number> = { device: device ?? "", limit: 1000 };
    if (spec.spec.state.agent) query.agent = spec.spec.state.agent;
    const all = await this.api.all<TagOut, "items">("/api/v1/tags", "items", query);
    this.tags = all.filter((tag) => NUMERIC.has(tag.data_type) && !used.has(tag.tag));
    replace(
      this.tagPicker,
      ...this.tags.map((tag, index) => h("option", { value: index }, tag.tag)),
    );
  }

  private async drawChart(): Promise<void> {
    const tag = this.tags[Number(this.tagPicker.value)];
    if (tag === undefined) {
      this.chart?.destroy();
      this.chart = null;
      replace(this.sections.chart, h("p", {}, "This machine's device has no other numeric tag."));
      return;
    }
    const width = this.width();
    this.drawnWidth = width;
    const to = new Date();
    const from = new Date(to.getTime() - 3600_000);
    const page = await this.api.get<SeriesPage>("/api/v1/series", {
      tag: tag.tag,
      agent: tag.agent,
      from: from.toISOString(),
      to: to.toISOString(),
      max_points: width,
    });
    const xs: number[] = [];
    const ys: (number | null)[] = [];
    for (const reading of page.readings ?? []) {
      xs.push(Date.parse(reading.ts) / 1000);
      ys.push(typeof reading.value === "number" ? reading.value : typeof reading.value === "boolean" ? Number(reading.value) : null);
    }
    const at = (seconds: number): string => clock(new Date(seconds * 1000).toISOString(), this.zoneName);
    this.chart?.destroy();
    const holder = h("div", { class: "chart", role: "img", "aria-label": `${tag.tag} over the last hour: ${page.count} points` });
    replace(this.sections.chart, holder, h("p", { class: "muted" }, `Last hour, ${page.count} points${page.downsampled ? " (downsampled, peaks kept)" : ""}; the chart asked for ${width}.`));
    this.chart = new uPlot(
      {
        width,
        height: 240,
        // Times on the site's wall clock, 24-hour, as everywhere else on the page.
        series: [
          { label: "Time", value: (_u, v) => (v === null ? "–" : at(v)) },
          { label: tag.tag, stroke: "#0b57d0", width: 1.5 },
        ],
        axes: [{ values: (_u, splits) => splits.map(at) }, {}],
      },
      [xs, ys],
      holder,
    );
  }
}
