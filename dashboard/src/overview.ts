// The plant overview: each machine as a tile (state, for how long, current-shift OEE and its
// factors from the KPI API), and every agent's health. Kept live from the event stream.

import { type Api, ApiError } from "./api";
import { ActiveAlertsPanel } from "./alerts";
import { type Child, h, replace } from "./dom";
import { clock, code, count, duration, percent, secondsSince } from "./format";
import type { SseEvent } from "./sse";
import { machineHash } from "./route";
import { lookOf } from "./states";
import type {
  Agent,
  AgentStatusBody,
  EquipmentTree,
  KpiReport,
  Kpis,
  MachineNow,
  MachineStateBody,
  MachineStates,
  SiteNode,
  StreamEvent,
} from "./types";

const REFRESH_MS = 30_000;
const COALESCE_MS = 300;

interface Tile {
  state: HTMLElement;
  kpis: HTMLElement;
}

/** The browser's own zone, where no site says which to use. */
function browserZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

export class Overview {
  private tree: EquipmentTree | null = null;
  private readonly states = new Map<string, MachineStates>();
  private readonly kpis = new Map<string, KpiReport | string>();
  private agents: Agent[] = [];
  private readonly tiles = new Map<string, Tile>();
  private readonly shiftNotes = new Map<string, HTMLElement>();
  private readonly agentsBody = h("tbody");
  private readonly pending = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private readonly alerts: ActiveAlertsPanel;

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly onError: (error: unknown) => void,
  ) {
    this.alerts = new ActiveAlertsPanel(api, () => this.zone());
  }

  /** Load everything and show it; refresh on a timer and tick the durations. */
  async start(): Promise<void> {
    // Timers first: a first load that fails is tried again by the refresh.
    this.timers.push(setInterval(() => this.tick(), 1000));
    this.timers.push(
      setInterval(() => {
        if (this.tree === null) {
          this.guard(this.reload());
          return;
        }
        this.guard(this.refreshAgents());
        for (const site of this.tree.sites) this.guard(this.refreshSite(site));
      }, REFRESH_MS),
    );
    await this.reload();
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    for (const timer of this.pending.values()) clearTimeout(timer);
  }

  /** Everything again: after a reconnect or a stream reset. */
  async reload(): Promise<void> {
    this.tree = await this.api.get<EquipmentTree>("/api/v1/equipment");
    await Promise.all([
      this.refreshAgents(),
      ...this.tree.sites.map((site) => this.refreshSite(site, false)),
      this.alerts.refresh(),
    ]);
    this.render();
  }

  /** An event from the stream. */
  onEvent(event: SseEvent): void {
    this.alerts.onEvent(event);
    if (event.event === "machine.state") {
      const data = JSON.parse(event.data) as StreamEvent<MachineStateBody>;
      this.later(`site:${data.body.site}`, () => {
        const site = this.tree?.sites.find((s) => s.id === data.body.site);
        if (site !== undefined) return this.refreshSite(site);
        return this.reload(); // a site the page did not know yet
      });
    } else if (event.event === "agent.status") {
      const data = JSON.parse(event.data) as StreamEvent<AgentStatusBody>;
      const agent = this.agents.find((a) => a.agent === data.body.agent);
      if (agent !== undefined) {
        agent.status = data.body.status;
        agent.status_since = data.body.since;
        this.renderAgents();
      }
      this.later("agents", () => this.refreshAgents());
    }
  }

  private guard(work: Promise<void>): void {
    work.catch(this.onError);
  }

  /** Run `work` once after a short pause, however many events asked for it meanwhile. */
  private later(key: string, work: () => Promise<void>): void {
    if (this.pending.has(key)) return;
    this.pending.set(
      key,
      setTimeout(() => {
        this.pending.delete(key);
        this.guard(work());
      }, COALESCE_MS),
    );
  }

  /** The zone times are shown in where no one site's applies: the first site's. */
  zone(): string {
    return this.tree?.sites[0]?.time_zone ?? browserZone();
  }

  private async refreshAgents(): Promise<void> {
    this.agents = await this.api.all<Agent, "agents">("/api/v1/agents", "agents", { limit: 1000 });
    this.renderAgents();
  }

  private async refreshSite(site: SiteNode, show = true): Promise<void> {
    const [states, kpis] = await Promise.all([
      this.api.get<MachineStates>("/api/v1/machine-states", { site: site.id }),
      this.currentShift(site.id),
    ]);
    this.states.set(site.id, states);
    this.kpis.set(site.id, kpis);
    if (show) this.renderSite(site);
  }

  private async currentShift(site: string): Promise<KpiReport | string> {
    try {
      return await this.api.get<KpiReport>("/api/v1/kpis", {
        site,
        window: "current_shift",
        by_machine: true,
      });
    } catch (error) {
      // 422: the calendar has no shift running now; say so on the page instead of failing.
      if (error instanceof ApiError && error.status === 422) return "No shift is running now.";
      throw error;
    }
  }

  private render(): void {
    const tree = this.tree;
    if (tree === null) return;
    this.tiles.clear();
    this.shiftNotes.clear();
    const sites = tree.sites.map((site) => this.siteSection(site));
    replace(
      this.root,
      h("h1", {}, "Plant overview"),
      this.alerts.element,
      h(
        "section",
        { "aria-labelledby": "machines-heading" },
        h("h2", { id: "machines-heading" }, "Machines"),
        ...(sites.length > 0 ? sites : [h("p", {}, "No sites are set up yet.")]),
      ),
      h(
        "section",
        { "aria-labelledby": "agents-heading" },
        h("h2", { id: "agents-heading" }, "Agents"),
        h(
          "div",
          { class: "table-scroll", tabindex: 0, role: "region", "aria-labelledby": "agents-heading" },
          h(
            "table",
            { class: "agents" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...[
                  "Agent",
                  "Status",
                  "Since",
                  "Last seen",
                  "Buffered readings",
                  "Oldest unsent",
                  "Dropped",
                ].map((name) => h("th", { scope: "col" }, name)),
              ),
            ),
            this.agentsBody,
          ),
        ),
      ),
    );
    for (const site of tree.sites) this.renderSite(site);
    this.renderAgents();
  }

  private siteSection(site: SiteNode): HTMLElement {
    const note = h("p", { class: "shift-note" });
    this.shiftNotes.set(site.id, note);
    const headingId = `site-${site.id}`;
    return h(
      "section",
      { class: "site", "aria-labelledby": headingId },
      h("h3", { id: headingId }, site.name ?? site.id, h("span", { class: "zone" }, ` (times in ${site.time_zone})`)),
      note,
      ...site.areas.flatMap((area) =>
        area.lines.map((line) =>
          h(
            "div",
            { class: "line" },
            h("h4", {}, `${area.name ?? area.id} › ${line.name ?? line.id}`),
            line.machines.length === 0
              ? h("p", {}, "No machines on this line.")
              : h("ul", { class: "tiles" }, ...line.machines.map((m) => this.tile(site.id, m))),
          ),
        ),
      ),
    );
  }

  private tile(site: string, machine: string): HTMLElement {
    const state = h("div", { class: "state" });
    const kpis = h("div", { class: "kpis" });
    this.tiles.set(`${site}/${machine}`, { state, kpis });
    return h(
      "li",
      { class: "tile", "data-machine": `${site}/${machine}` },
      h("h5", {}, h("a", { class: "machine-name", href: machineHash(site, machine) }, machine)),
      state,
      kpis,
    );
  }

  private renderSite(site: SiteNode): void {
    const states = this.states.get(site.id);
    const report = this.kpis.get(site.id);
    const note = this.shiftNotes.get(site.id);
    if (note !== undefined) {
      replace(
        note,
        typeof report === "string"
          ? report
          : report === undefined
            ? ""
            : `Current shift started at ${clock(report.from, site.time_zone)}; its figures run to ${clock(report.to, site.time_zone)}.`,
      );
    }
    for (const now of states?.machines ?? []) {
      const tile = this.tiles.get(`${site.id}/${now.machine}`);
      if (tile === undefined) continue;
      const link = tile.state.parentElement?.querySelector(".machine-name");
      if (link && now.name !== null) link.textContent = now.name;
      this.renderState(tile, now, site.time_zone);
      const part =
        typeof report === "object" ? report.total.machines?.find((m) => m.machine === now.machine) : undefined;
      this.renderKpis(tile, part?.kpis ?? null, typeof report === "string");
    }
  }

  private renderState(tile: Tile, now: MachineNow, zone: string): void {
    const look = lookOf(now.since === null ? null : now.element);
    const tileElement = tile.state.parentElement;
    tileElement?.setAttribute("data-state", now.state_name ?? "unknown");
    tileElement?.setAttribute("data-tone", look.tone);
    const name = now.state_name ?? (now.state === null ? "no state yet" : `code ${code(now.state)}`);
    const lines: Child[] = [
      h(
        "p",
        { class: `state-line ${look.tone}` },
        h("span", { class: "shape", "aria-hidden": "true" }, look.shape),
        " ",
        h("span", { class: "state-word" }, look.word),
        ": ",
        h("span", { class: "state-name" }, name),
      ),
    ];
    if (now.since !== null) {
      lines.push(
        h(
          "p",
          { class: "since" },
          "for ",
          h("span", { "data-since": now.since }, duration(secondsSince(now.since, Date.now()))),
          ` (since ${clock(now.since, zone)})`,
        ),
      );
    }
    // A reason code left over from the last stop means nothing while the machine produces.
    if (now.reason !== null && now.element !== "production") {
      lines.push(h("p", { class: "reason" }, "Reason: ", h("span", { class: "reason-name" }, now.reason_name ?? `code ${code(now.reason)}`)));
    }
    if (now.product !== null) lines.push(h("p", { class: "product" }, "Product: ", now.product));
    replace(tile.state, ...lines);
  }

  private renderKpis(tile: Tile, kpis: Kpis | null, noShift: boolean): void {
    if (kpis === null) {
      replace(tile.kpis, h("p", { class: "muted" }, noShift ? "No shift now" : "No OEE yet"));
      return;
    }
    const entry = (label: string, value: number | null, cls: string): Child[] => [
      h("dt", {}, label),
      h("dd", { class: cls }, percent(value)),
    ];
    replace(
      tile.kpis,
      h(
        "dl",
        { class: "oee" },
        ...entry("OEE (shift)", kpis.oee, "oee-value"),
        ...entry("Availability", kpis.availability, "availability-value"),
        ...entry("Performance", kpis.effectiveness, "effectiveness-value"),
        ...entry("Quality", kpis.quality_ratio, "quality-value"),
      ),
    );
  }

  private renderAgents(): void {
    const zone = this.zone();
    const rows = this.agents.map((agent) => {
      const online = agent.status === "online";
      const buffer = agent.last_heartbeat?.buffer;
      const drops =
        buffer === undefined ? null : (buffer.dropped_oldest ?? 0) + (buffer.dropped_newest ?? 0);
      return h(
        "tr",
        { "data-agent": agent.agent, "data-status": agent.status },
        h("th", { scope: "row" }, agent.agent),
        h(
          "td",
          { class: online ? "tone-run" : "tone-stop" },
          h("span", { class: "shape", "aria-hidden": "true" }, online ? "●" : "○"),
          " ",
          h("span", { class: "agent-status" }, online ? "Online" : "Offline"),
        ),
        h("td", {}, clock(agent.status_since, zone, true)),
        h("td", {}, clock(agent.last_seen, zone, true)),
        h("td", { class: "num" }, count(buffer?.readings)),
        h("td", { class: "num" }, buffer?.oldest_age_s === undefined ? "–" : duration(buffer.oldest_age_s)),
        h("td", { class: "num" }, count(drops)),
      );
    });
    replace(
      this.agentsBody,
      ...(rows.length > 0 ? rows : [h("tr", {}, h("td", { colspan: 7 }, "No agent has connected yet."))]),
    );
  }

  private tick(): void {
    const now = Date.now();
    for (const span of this.root.querySelectorAll<HTMLElement>("[data-since]")) {
      const since = span.dataset.since;
      if (since !== undefined) span.textContent = duration(secondsSince(since, now));
    }
  }
}
