// The alerts page (active and recent alerts, acknowledging with a comment, and for admins the
// tag threshold rules) and the overview's panel of active alerts. Kept live from the stream's
// alert.* events, each of which carries the alert as it is now.

import { type Api, ApiError } from "./api";
import { type Child, h, replace } from "./dom";
import { clock } from "./format";
import {
  type AlertItem,
  alertFromEvent,
  alertLook,
  isActive,
  type NewThresholdRule,
  thresholdRule,
  upsert,
} from "./alertview";
import { allows, type Role } from "./session";
import type { SseEvent } from "./sse";
import type { EquipmentTree } from "./types";

const RECENT = 50;
const ACTIVE_LIMIT = 500;

interface AlertPage {
  items: AlertItem[];
  next: string | null;
}

interface RuleItem {
  id: string;
  name: string;
  enabled: boolean;
  condition: Record<string, unknown> & { kind: string };
}

/** The zone the dashboard shows times in: the first site's, else the browser's. */
export async function siteZone(api: Api): Promise<string> {
  const tree = await api.get<EquipmentTree>("/api/v1/equipment");
  return tree.sites[0]?.time_zone ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.detail || error.title;
  return error instanceof Error ? error.message : String(error);
}

/** Active alerts (pending and firing, every page) followed by the latest ones of any state. */
async function loadAlerts(api: Api, withRecent: boolean): Promise<AlertItem[]> {
  const [firing, pending, recent] = await Promise.all([
    api.all<AlertItem, "items">("/api/v1/alerts", "items", { state: "firing", limit: ACTIVE_LIMIT }),
    api.all<AlertItem, "items">("/api/v1/alerts", "items", { state: "pending", limit: ACTIVE_LIMIT }),
    withRecent ? api.get<AlertPage>("/api/v1/alerts", { limit: RECENT }) : Promise.resolve(null),
  ]);
  let alerts: AlertItem[] = [];
  for (const alert of [...firing, ...pending, ...(recent?.items ?? [])]) alerts = upsert(alerts, alert);
  return alerts;
}

function stateBadge(alert: AlertItem): HTMLElement {
  const look = alertLook(alert.state);
  return h(
    "span",
    { class: `alert-state ${look.tone}` },
    h("span", { class: "shape", "aria-hidden": "true" }, look.shape),
    " ",
    h("span", { class: "alert-state-word" }, look.word),
  );
}

function lateMark(alert: AlertItem): Child {
  return alert.late
    ? h("span", { class: "late", title: "Found from readings that arrived late" }, "⏱ late")
    : null;
}

/** The overview's small panel: the active alerts, live, with a link to the alerts page. */
export class ActiveAlertsPanel {
  readonly element: HTMLElement;
  private readonly list = h("div", { class: "active-alerts" });
  private alerts: AlertItem[] = [];

  constructor(
    private readonly api: Api,
    private readonly zone: () => string,
  ) {
    this.element = h(
      "section",
      { "aria-labelledby": "active-alerts-heading" },
      h("h2", { id: "active-alerts-heading" }, "Active alerts"),
      this.list,
      h("p", {}, h("a", { href: "#/alerts" }, "All alerts")),
    );
  }

  async refresh(): Promise<void> {
    this.alerts = await loadAlerts(this.api, false);
    this.render();
  }

  /** An event from the stream: alert.* ones change the panel. */
  onEvent(event: SseEvent): void {
    const changed = alertFromEvent(event.event, event.data);
    if (changed === null) return;
    this.alerts = upsert(this.alerts, changed);
    this.render();
  }

  private render(): void {
    const active = this.alerts.filter(isActive);
    const zone = this.zone();
    replace(
      this.list,
      active.length === 0
        ? h("p", { class: "muted" }, "No alert is pending or firing.")
        : h(
            "ul",
            { class: "alert-lines" },
            ...active.map((alert) =>
              h(
                "li",
                { "data-alert-id": alert.id, "data-state": alert.state },
                stateBadge(alert),
                " ",
                h("span", { class: "alert-subject" }, alert.subject),
                ` (${alert.kind}) since ${clock(alert.started_at, zone, true)} `,
                lateMark(alert),
                alert.acknowledged_at === null ? null : h("span", { class: "muted" }, " acknowledged"),
              ),
            ),
          ),
    );
  }
}

export class AlertsPage {
  private alerts: AlertItem[] = [];
  private siteZoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
  /** Acknowledgement forms by alert id, kept across renders so typed comments survive. */
  private readonly ackForms = new Map<number, HTMLFormElement>();
  private readonly active = h("div", { id: "active-alerts" });
  private readonly recent = h("tbody");
  private readonly rules: RulesSection | null;

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly role: Role,
    private readonly onError: (error: unknown) => void,
  ) {
    this.rules = allows(role, "admin") ? new RulesSection(api, onError) : null;
  }

  async start(): Promise<void> {
    replace(
      this.root,
      h("h1", {}, "Alerts"),
      h(
        "section",
        { "aria-labelledby": "active-heading" },
        h("h2", { id: "active-heading" }, "Active: pending and firing"),
        allows(this.role, "operator")
          ? null
          : h(
              "p",
              { class: "muted", id: "ack-reason" },
              `Acknowledging needs an operator or admin key; this key is a ${this.role}'s.`,
            ),
        this.active,
      ),
      h(
        "section",
        { "aria-labelledby": "recent-heading" },
        h("h2", { id: "recent-heading" }, `Recent: the latest ${RECENT} of any state`),
        h(
          "div",
          { class: "table-scroll", tabindex: 0, role: "region", "aria-labelledby": "recent-heading" },
          h(
            "table",
            { class: "alerts" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["State", "Subject", "Kind", "Started", "Fired", "Resolved", "Value", "Acknowledged"].map(
                  (name) => h("th", { scope: "col" }, name),
                ),
              ),
            ),
            this.recent,
          ),
        ),
      ),
      this.rules?.element ?? null,
    );
    await this.reload();
  }

  stop(): void {
    // Nothing runs between events.
  }

  async reload(): Promise<void> {
    const [zone, alerts] = await Promise.all([siteZone(this.api), loadAlerts(this.api, true)]);
    this.siteZoneName = zone;
    this.alerts = alerts;
    this.render();
    await this.rules?.reload();
  }

  onEvent(event: SseEvent): void {
    const changed = alertFromEvent(event.event, event.data);
    if (changed === null) return;
    this.alerts = upsert(this.alerts, changed);
    this.render();
  }

  zone(): string {
    return this.siteZoneName;
  }

  private render(): void {
    // Rebuilding moves the kept forms: give focus back to what had it.
    const focused = document.activeElement;
    const active = this.alerts.filter(isActive);
    replace(
      this.active,
      active.length === 0
        ? h("p", { class: "muted" }, "No alert is pending or firing.")
        : h("ul", { class: "alert-cards" }, ...active.map((alert) => this.card(alert))),
    );
    const recent = this.alerts.slice(0, RECENT);
    replace(
      this.recent,
      ...(recent.length > 0
        ? recent.map((alert) => this.row(alert))
        : [h("tr", {}, h("td", { colspan: 8 }, "No alert yet."))]),
    );
    for (const id of this.ackForms.keys()) {
      if (!active.some((a) => a.id === id && a.acknowledged_at === null)) this.ackForms.delete(id);
    }
    if (focused instanceof HTMLElement && focused !== document.activeElement && this.root.contains(focused)) {
      focused.focus();
    }
  }

  private card(alert: AlertItem): HTMLElement {
    const zone = this.siteZoneName;
    const headingId = `alert-${alert.id}`;
    return h(
      "li",
      { class: "alert-card", "data-alert-id": alert.id, "data-state": alert.state, "aria-labelledby": headingId },
      h("h3", { id: headingId }, stateBadge(alert), " ", h("span", { class: "alert-subject" }, alert.subject), " ", lateMark(alert)),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Rule"),
        h("dd", {}, `${alert.kind} (${alert.rule_id})`),
        h("dt", {}, "Started"),
        h("dd", {}, clock(alert.started_at, zone, true)),
        h("dt", {}, "Fired"),
        h("dd", {}, alert.fired_at === null ? "not yet" : clock(alert.fired_at, zone, true)),
        h("dt", {}, "Value"),
        h("dd", { class: "alert-value" }, alert.value === null ? "–" : String(alert.value)),
      ),
      this.acknowledgement(alert),
    );
  }

  private acknowledgement(alert: AlertItem): HTMLElement {
    if (alert.acknowledged_at !== null) {
      return h(
        "p",
        { class: "acknowledged" },
        h("span", { class: "shape", "aria-hidden": "true" }, "✓"),
        ` Acknowledged by ${alert.acknowledged_by ?? "?"} at ${clock(alert.acknowledged_at, this.siteZoneName, true)}`,
        alert.ack_comment ? `: “${alert.ack_comment}”` : "",
      );
    }
    if (!allows(this.role, "operator")) {
      return h(
        "p",
        {},
        h("button", { type: "button", class: "ack", disabled: true, "aria-describedby": "ack-reason" }, "Acknowledge"),
      );
    }
    let form = this.ackForms.get(alert.id);
    if (form === undefined) {
      form = this.ackForm(alert.id);
      this.ackForms.set(alert.id, form);
    }
    return form;
  }

  private ackForm(id: number): HTMLFormElement {
    const inputId = `ack-comment-${id}`;
    const input = h("input", { id: inputId, name: "comment", type: "text", maxlength: 2000, autocomplete: "off" });
    const button = h("button", { type: "submit", class: "ack" }, "Acknowledge");
    const message = h("p", { class: "error", role: "alert" });
    const form = h(
      "form",
      { class: "ack-form" },
      h("label", { for: inputId }, "Comment"),
      input,
      button,
      message,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      button.disabled = true;
      this.api
        .send<AlertItem>("POST", `/api/v1/alerts/${id}/acknowledge`, { comment: input.value })
        .then((alert) => {
          this.alerts = upsert(this.alerts, alert);
          this.render();
        })
        .catch(async (error: unknown) => {
          replace(message, `Not acknowledged: ${errorText(error)}`);
          // 409: someone was first; show theirs.
          if (error instanceof ApiError && error.status === 409) {
            this.alerts = upsert(this.alerts, await this.api.get<AlertItem>(`/api/v1/alerts/${id}`));
            this.render();
          }
        })
        .catch(this.onError)
        .finally(() => {
          button.disabled = false;
        });
    });
    return form;
  }

  private row(alert: AlertItem): HTMLElement {
    const zone = this.siteZoneName;
    return h(
      "tr",
      { "data-alert-id": alert.id, "data-state": alert.state },
      h("td", {}, stateBadge(alert), " ", lateMark(alert)),
      h("th", { scope: "row" }, alert.subject),
      h("td", {}, alert.kind),
      h("td", {}, clock(alert.started_at, zone, true)),
      h("td", {}, alert.fired_at === null ? "–" : clock(alert.fired_at, zone, true)),
      h(
        "td",
        {},
        alert.resolved_at === null ? "–" : clock(alert.resolved_at, zone, true),
        alert.resolved_reason ? ` (${alert.resolved_reason})` : "",
      ),
      h("td", { class: "num" }, alert.value === null ? "–" : String(alert.value)),
      h("td", {}, alert.acknowledged_at === null ? "no" : `yes, by ${alert.acknowledged_by ?? "?"}`),
    );
  }
}

function describe(condition: RuleItem["condition"]): string {
  if (condition.kind !== "tag_threshold") {
    const { kind, ...rest } = condition;
    return `${kind} ${JSON.stringify(rest)}`;
  }
  const c = condition as NewThresholdRule["condition"];
  const clear = c.clear_threshold === null ? "" : `, clears at ${c.clear_threshold}`;
  return `${c.agent ?? "any agent"}/${c.device}/${c.tag} ${c.direction} ${c.threshold}${clear}, held ${c.hold_seconds} s`;
}

/** Admins: the rules, a form for a tag threshold rule, enabling, disabling and deleting. */
class RulesSection {
  readonly element: HTMLElement;
  private readonly body = h("tbody");
  private readonly message = h("p", { class: "error", role: "alert", id: "rule-error" });

  constructor(
    private readonly api: Api,
    private readonly onError: (error: unknown) => void,
  ) {
    this.element = h(
      "section",
      { "aria-labelledby": "rules-heading" },
      h("h2", { id: "rules-heading" }, "Alert rules"),
      h(
        "div",
        { class: "table-scroll", tabindex: 0, role: "region", "aria-labelledby": "rules-heading" },
        h(
          "table",
          { class: "rules" },
          h(
            "thead",
            {},
            h("tr", {}, ...["Name", "Condition", "Enabled", "Actions"].map((n) => h("th", { scope: "col" }, n))),
          ),
          this.body,
        ),
      ),
      this.form(),
    );
  }

  async reload(): Promise<void> {
    const rules = await this.api.all<RuleItem, "items">("/api/v1/alert-rules", "items", { limit: 1000 });
    replace(
      this.body,
      ...(rules.length > 0 ? rules.map((rule) => this.row(rule)) : [h("tr", {}, h("td", { colspan: 4 }, "No rule yet."))]),
    );
  }

  private act(work: Promise<unknown>): void {
    work.then(() => this.reload()).then(
      () => replace(this.message),
      (error: unknown) => replace(this.message, `Not done: ${errorText(error)}`),
    ).catch(this.onError);
  }

  private row(rule: RuleItem): HTMLElement {
    const toggle = h(
      "button",
      { type: "button", "aria-label": `${rule.enabled ? "Disable" : "Enable"} rule ${rule.name}` },
      rule.enabled ? "Disable" : "Enable",
    );
    toggle.addEventListener("click", () =>
      this.act(this.api.send("PATCH", `/api/v1/alert-rules/${rule.id}`, { enabled: !rule.enabled })),
    );
    const remove = h("button", { type: "button", "aria-label": `Delete rule ${rule.name}` }, "Delete");
    remove.addEventListener("click", () => this.act(this.api.send("DELETE", `/api/v1/alert-rules/${rule.id}`)));
    return h(
      "tr",
      { "data-rule-id": rule.id },
      h("th", { scope: "row" }, rule.name),
      h("td", { class: "wrap" }, describe(rule.condition)),
      h("td", {}, rule.enabled ? "✓ enabled" : "○ disabled"),
      h("td", { class: "actions" }, toggle, " ", remove),
    );
  }

  private form(): HTMLFormElement {
    const field = (name: string, label: string, attrs: Record<string, string | boolean> = {}): HTMLElement[] => [
      h("label", { for: `rule-${name}` }, label),
      h("input", { id: `rule-${name}`, name, type: "text", autocomplete: "off", ...attrs }),
    ];
    const direction = h(
      "select",
      { id: "rule-direction", name: "direction" },
      h("option", { value: "above" }, "above"),
      h("option", { value: "below" }, "below"),
    );
    const form = h(
      "form",
      { class: "grid-form", "aria-labelledby": "new-rule-heading" },
      h("h3", { id: "new-rule-heading" }, "New tag threshold rule"),
      ...field("name", "Name", { required: true }),
      ...field("agent", "Agent (empty: every agent)"),
      ...field("device", "Device", { required: true }),
      ...field("tag", "Tag", { required: true }),
      h("label", { for: "rule-direction" }, "Fires when the value is"),
      direction,
      ...field("threshold", "Threshold", { required: true, inputmode: "decimal" }),
      ...field("clear_threshold", "Clears at (empty: the threshold)", { inputmode: "decimal" }),
      ...field("hold_seconds", "Held for (seconds)", { inputmode: "decimal" }),
      h("button", { type: "submit" }, "Add rule"),
      this.message,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = (name: string): string => (form.elements.namedItem(name) as HTMLInputElement).value;
      let body: NewThresholdRule;
      try {
        body = thresholdRule({
          name: value("name"),
          agent: value("agent"),
          device: value("device"),
          tag: value("tag"),
          direction: direction.value,
          threshold: value("threshold"),
          clear_threshold: value("clear_threshold"),
          hold_seconds: value("hold_seconds"),
        });
      } catch (error) {
        replace(this.message, errorText(error));
        return;
      }
      this.act(this.api.send("POST", "/api/v1/alert-rules", body).then(() => form.reset()));
    });
    return form;
  }
}
