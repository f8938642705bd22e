// A machine's page: its OEE for the current and previous shift with the working (the KPI API's
// own elements), today's state timeline, the downtime Pareto, good and scrap, and one process
// tag as a chart that asks for as many points as it is wide.

import uPlot from "uplot";
import { type Api, ApiError } from "./api";
import { allows, type Role } from "./session";
import { type Child, h, replace } from "./dom";
import { clock, code, count, duration, percent } from "./format";
import type { SseEvent } from "./sse";
import { lookOf } from "./states";
import type {
  Code,
  Downtime,
  GroupedKpiReport,
  MachineKpiReport,
  MachineOut,
  MachineStateBody,
  MachineStates,
  SeriesPage,
  SiteOut,
  Stop,
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
    hourly: h("div"),
    stops: h("div"),
  };
  private readonly tagPicker = h("select", { id: "tag-picker" });
  private drawnWidth = 0;
  /** How many production days the timeline shows: today alone, or the week to today. */
  private timelineDays: 1 | 7 = 1;
  private reasons: SiteOut["spec"]["loss_mapping"]["reasons"] = [];
  private readonly dayButton = h("button", { type: "button", id: "timeline-day", "aria-pressed": "true" }, "Today");
  private readonly weekButton = h("button", { type: "button", id: "timeline-week", "aria-pressed": "false" }, "Last 7 days");
  private readonly stopsStatus = h("p", { id: "stops-status", role: "status", tabindex: -1 });
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
    private readonly role: Role = "viewer",
  ) {
    this.tagPicker.addEventListener("change", () => {
      this.drawChart().catch(this.onError);
    });
    const zoomTo = (days: 1 | 7): void => {
      this.timelineDays = days;
      this.dayButton.setAttribute("aria-pressed", String(days === 1));
      this.weekButton.setAttribute("aria-pressed", String(days === 7));
      this.drawTimeline().catch(this.onError);
    };
    this.dayButton.addEventListener("click", () => zoomTo(1));
    this.weekButton.addEventListener("click", () => zoomTo(7));
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
      section("hourly-heading", "OEE by hour today", this.sections.hourly),
      section(
        "timeline-heading",
        "States",
        h("div", { class: "chart-controls", role: "group", "aria-label": "Timeline span" }, this.dayButton, this.weekButton),
        this.sections.timeline,
      ),
      section("pareto-heading", "Downtime today by reason", this.sections.pareto),
      section("stops-heading", "Stops today", this.stopsStatus, this.sections.stops),
      section(
        "chart-heading",
        "Process tag",
        h("label", { for: "tag-picker" }, "Tag "),
        this.tagPicker,
        this.sections.chart,
      ),
    );
    await Promise.all([this.loadTags(spec), this.loadReasons()]);
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
    await Promise.all([this.drawNow(), this.drawShifts(), this.drawHourly(), this.drawTimeline(), this.drawPareto()]);
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
    let timeline = await this.api.get<Timeline>("/api/v1/machine-states/timeline", this.query({ window: "today" }));
    const week = this.timelineDays === 7;
    if (week) {
      // The week: the six production days before today's, and today's so far.
      timeline = await this.api.get<Timeline>(
        "/api/v1/machine-states/timeline",
        this.query({ from: new Date(Date.parse(timeline.from) - 6 * 86400_000).toISOString(), to: timeline.to }),
      );
    }
    const at = (iso: string): string => clock(iso, timeline.time_zone, week);
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
        h("td", {}, at(span.from)),
        h("td", {}, span.ongoing ? "now" : at(span.to)),
        h("td", {}, h("span", { "aria-hidden": "true" }, lookOf(span.element).shape), " ", span.state_name ?? `code ${code(span.state)}`),
        h("td", {}, span.reason === null ? "" : (span.reason_name ?? `code ${code(span.reason)}`)),
      ),
    );
    replace(
      this.sections.timeline,
      h("p", { class: "muted", id: "timeline-range" }, `From ${clock(timeline.from, timeline.time_zone, true)} to ${clock(timeline.to, timeline.time_zone, true)}; gaps are time with no known state.`),
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
    this.drawStops(downtime.events);
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

  /** OEE per hour of today's production day: the KPI API's hourly groups. */
  private async drawHourly(): Promise<void> {
    const report = await this.api.get<GroupedKpiReport>("/api/v1/kpis", this.query({ window: "today", group_by: "hour" }));
    if (report.groups.length === 0) {
      replace(this.sections.hourly, h("p", {}, "No hour of today's production day has begun."));
      return;
    }
    const rows = report.groups.map((group) => {
      const fill = h("span", { class: "hour-fill", "aria-hidden": "true" });
      fill.style.width = `${Math.min(100, Math.max(0, (group.kpis.oee ?? 0) * 100))}%`;
      return h(
        "tr",
        { "data-hour": group.key },
        h("th", { scope: "row" }, `${clock(group.from, report.time_zone).slice(0, 5)}–${clock(group.to, report.time_zone).slice(0, 5)}`),
        h("td", { class: "num hour-oee" }, percent(group.kpis.oee)),
        h("td", { class: "hour-bar-cell" }, h("span", { class: "pareto-bar" }, fill)),
        h("td", { class: "num" }, percent(group.kpis.availability)),
        h("td", { class: "num" }, percent(group.kpis.effectiveness)),
        h("td", { class: "num" }, percent(group.kpis.quality_ratio)),
      );
    });
    replace(
      this.sections.hourly,
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          { class: "hourly" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["Hour", "OEE", "", "Availability", "Performance", "Quality"].map((name) =>
                h("th", { scope: "col" }, name === "" ? h("span", { class: "visually-hidden" }, "OEE as a bar") : name),
              ),
            ),
          ),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }

  private async loadReasons(): Promise<void> {
    if (!allows(this.role, "operator")) return;
    const site = await this.api.get<SiteOut>(`/api/v1/equipment/sites/${encodeURIComponent(this.site)}`);
    this.reasons = site.spec.loss_mapping.reasons;
  }

  /** Today's stops; an operator may give one another reason. */
  private drawStops(stops: Stop[]): void {
    if (stops.length === 0) {
      replace(this.sections.stops, h("p", {}, "No stops today."));
      return;
    }
    const may = allows(this.role, "operator") && this.reasons.length > 0;
    const rows = stops.map((stop) => {
      const cells = [
        h("td", {}, clock(stop.start, this.zoneName)),
        h("td", { class: "num" }, duration(stop.duration_s), stop.ongoing ? " (going on)" : ""),
        h("td", {}, stop.state_name ?? `code ${code(stop.state)}`),
        h("td", { class: "stop-reason" }, stop.reason === null ? "none given" : (stop.reason_name ?? `code ${code(stop.reason)}`)),
        h("td", {}, stop.reclassified === null ? "" : `by ${stop.reclassified.by_name ?? stop.reclassified.by} at ${clock(stop.reclassified.at, this.zoneName)}`),
      ];
      const row = h("tr", { "data-start": stop.start }, ...cells);
      if (may) {
        const button = h("button", { type: "button", class: "reclassify", "aria-label": `Change reason of the stop at ${clock(stop.start, this.zoneName)}` }, "Change reason");
        button.addEventListener("click", () => this.openReclassify(row, stop, button));
        row.appendChild(h("td", {}, button));
      }
      return row;
    });
    const headings = ["Start", "Length", "State", "Reason", "Changed"];
    if (may) headings.push("Action");
    replace(
      this.sections.stops,
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          { class: "stops" },
          h("thead", {}, h("tr", {}, ...headings.map((name) => h("th", { scope: "col" }, name)))),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }

  private openReclassify(row: HTMLTableRowElement, stop: Stop, opener: HTMLButtonElement): void {
    row.parentElement?.querySelectorAll("tr.reclassify-row").forEach((open) => open.remove());
    const id = `reason-${Date.parse(stop.start)}`;
    const select = h("select", { id, required: true });
    this.reasons.forEach((reason, index) => {
      select.appendChild(h("option", { value: index, selected: sameCode(reason.value, stop.reason) }, reason.name));
    });
    const note = h("input", { id: `${id}-note`, type: "text", maxlength: 500 });
    const save = h("button", { type: "submit" }, "Save reason");
    const cancel = h("button", { type: "button" }, "Cancel");
    const form = h(
      "form",
      { class: "reclassify-form", "aria-label": `New reason for the stop at ${clock(stop.start, this.zoneName)}` },
      h("label", { for: id }, "Reason "),
      select,
      h("label", { for: `${id}-note` }, " Note "),
      note,
      " ",
      save,
      " ",
      cancel,
    );
    const formRow = h("tr", { class: "reclassify-row" }, h("td", { colspan: row.cells.length }, form));
    row.after(formRow);
    select.focus();
    cancel.addEventListener("click", () => {
      formRow.remove();
      opener.focus();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = this.reasons[Number(select.value)];
      if (reason === undefined) return;
      save.disabled = true;
      const body: { site: string; machine: string; start: string; reason: Code; note?: string } = {
        site: this.site,
        machine: this.machine,
        start: stop.start,
        reason: reason.value,
      };
      if (note.value.trim() !== "") body.note = note.value.trim();
      this.api
        .send("POST", "/api/v1/downtime/reclassifications", body)
        .then(async () => {
          replace(this.stopsStatus, `The stop at ${clock(stop.start, this.zoneName)} now has the reason ${reason.name}.`);
          await this.drawPareto();
          this.stopsStatus.focus();
        })
        .catch((error: unknown) => {
          save.disabled = false;
          replace(this.stopsStatus, h("span", { class: "error" }, `Not changed: ${error instanceof ApiError ? error.detail || error.title : String(error)}`));
        });
    });
  }
}

/** Whether two codes are the same (a reason's code may be a number, a boolean or text). */
export function sameCode(a: Code | null, b: Code | null): boolean {
  return a !== null && b !== null && typeof a === typeof b && a === b;
}
