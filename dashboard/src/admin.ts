// The admin pages (admin keys only; the API refuses others anyway): agents in detail, dead
// letters, and API keys (list, create showing the new key once, revoke).

import { type Api, ApiError } from "./api";
import {
  type AgentDetail,
  type ApiKey,
  bufferFacts,
  type CreatedKey,
  type DeadLetter,
  expiry,
  keyState,
  letterState,
} from "./adminfacts";
import { type Child, h, replace } from "./dom";
import { clock, count } from "./format";
import type { AdminSection } from "./route";
import type { Me } from "./types";

const SECTIONS: [AdminSection, string][] = [
  ["agents", "Agents"],
  ["dead-letters", "Dead letters"],
  ["keys", "API keys"],
];
const LETTERS_PAGE = 50;

function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.detail || error.title;
  return error instanceof Error ? error.message : String(error);
}

function table(headings: string[], rows: HTMLElement[], cls: string): HTMLElement {
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      { class: cls },
      h("thead", {}, h("tr", {}, ...headings.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, ...rows),
    ),
  );
}

export class AdminPage {
  private zoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
  private readonly body = h("div");
  private readonly status = h("p", { id: "admin-status", role: "status", tabindex: -1 });

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly section: AdminSection,
    private readonly me: Me,
    private readonly onError: (error: unknown) => void,
  ) {}

  zone(): string {
    return this.zoneName;
  }

  async start(): Promise<void> {
    const title = SECTIONS.find(([id]) => id === this.section)?.[1] ?? "Admin";
    document.title = `${title}: Plantwire`;
    const tabs = h(
      "nav",
      { "aria-label": "Admin pages", class: "subnav" },
      ...SECTIONS.map(([id, label]) =>
        h("a", { href: `#/admin/${id}`, "aria-current": id === this.section ? "page" : "false" }, label),
      ),
    );
    replace(this.root, h("h1", {}, title), tabs, this.status, this.body);
    if (this.me.role !== "admin") {
      replace(this.body, h("p", {}, "These pages need an admin key."));
      return;
    }
    const tree = await this.api.get<{ sites: { time_zone: string }[] }>("/api/v1/equipment");
    this.zoneName = tree.sites[0]?.time_zone ?? this.zoneName;
    await this.reload();
  }

  stop(): void {
    // Nothing runs in the background.
  }

  onEvent(): void {
    // Read on demand; the overview is the live view of agents.
  }

  async reload(): Promise<void> {
    if (this.me.role !== "admin") return;
    if (this.section === "agents") await this.drawAgents();
    else if (this.section === "dead-letters") await this.drawLetters();
    else await this.drawKeys();
  }

  private at(iso: string | null): string {
    return clock(iso, this.zoneName, true);
  }

  private async drawAgents(): Promise<void> {
    const agents = await this.api.all<AgentDetail, "agents">("/api/v1/agents", "agents", { limit: 1000 });
    if (agents.length === 0) {
      replace(this.body, h("p", {}, "No agent has reported yet."));
      return;
    }
    replace(
      this.body,
      h("p", { class: "muted" }, `Times in ${this.zoneName}.`),
      h(
        "ul",
        { class: "agent-cards" },
        ...agents.map((agent) => {
          const online = agent.status === "online";
          const facts: [string, Child][] = [
            ["Status", h("span", { class: "agent-status" }, h("span", { "aria-hidden": "true" }, online ? "● " : "○ "), online ? "Online" : "Offline")],
            ["Since", this.at(agent.status_since)],
            ["Last seen", this.at(agent.last_seen)],
            ["First seen", this.at(agent.first_seen)],
            ["Version", agent.version ?? "–"],
            ["Configuration hash", agent.config_hash ?? "–"],
            ["Buffer epoch", agent.epoch === null ? "–" : String(agent.epoch)],
            ["Devices", agent.devices === null || agent.devices.length === 0 ? "–" : agent.devices.join(", ")],
            ["Last heartbeat", this.at(agent.last_heartbeat_at)],
            ...bufferFacts(agent),
          ];
          return h(
            "li",
            { class: "agent-card", "data-agent": agent.agent },
            h("h2", {}, agent.agent),
            h("dl", { class: "facts" }, ...facts.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value)])),
            agent.last_heartbeat === null
              ? null
              : h(
                  "details",
                  {},
                  h("summary", {}, "The last heartbeat as sent"),
                  h("pre", { class: "heartbeat" }, JSON.stringify(agent.last_heartbeat, null, 2)),
                ),
          );
        }),
      ),
    );
  }

  private async drawLetters(): Promise<void> {
    const rows = h("tbody");
    const more = h("button", { type: "button", id: "letters-more", hidden: true }, "Show older");
    let next: string | null = null;
    const load = async (path: string): Promise<void> => {
      const page = await this.api.get<{ items: DeadLetter[]; next: string | null }>(path);
      for (const letter of page.items) {
        rows.appendChild(
          h(
            "tr",
            { "data-letter": letter.id },
            h("td", { class: "num" }, String(letter.id)),
            h("td", {}, this.at(letter.received_at)),
            h("td", {}, letter.agent ?? "–"),
            h("td", {}, letter.kind),
            h("td", {}, letter.reason),
            h("td", { class: "letter-error" }, letter.error),
            h("td", { class: "num" }, count(letter.readings), letter.partial ? " (the rest stored)" : ""),
            h("td", {}, letterState(letter)),
            h("td", { class: "num" }, count(letter.payload_bytes)),
          ),
        );
      }
      next = page.next;
      more.hidden = next === null;
      replace(this.status, `${rows.childElementCount} dead letters shown, newest first.`);
    };
    more.addEventListener("click", () => {
      if (next !== null) load(next).catch(this.onError);
    });
    const headings = ["Id", "Received", "Agent", "Kind", "Reason", "Error", "Readings", "State", "Bytes"];
    replace(
      this.body,
      h("p", { class: "muted" }, "Messages the collector could not store, kept for a look and a replay (plantwire-collector dead-letters). Times in ", this.zoneName, "."),
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          { class: "letters" },
          h("thead", {}, h("tr", {}, ...headings.map((name) => h("th", { scope: "col" }, name)))),
          rows,
        ),
      ),
      more,
    );
    await load(`/api/v1/dead-letters?limit=${LETTERS_PAGE}`);
  }

  private async drawKeys(): Promise<void> {
    const keys = await this.api.all<ApiKey, "items">("/api/v1/api-keys", "items", { limit: 500 });
    const now = Date.now();
    const rows = keys.map((key) => {
      const state = keyState(key, now);
      const own = key.prefix === this.me.prefix;
      const action: Child = !key.active
        ? ""
        : own
          ? h("span", { class: "muted" }, "This key")
          : this.revokeButton(key);
      return h(
        "tr",
        { "data-prefix": key.prefix },
        h("td", {}, h("code", {}, key.prefix)),
        h("td", { class: "key-name" }, key.name),
        h("td", {}, key.role),
        h("td", { class: "key-state" }, h("span", { "aria-hidden": "true" }, `${state.shape} `), state.word),
        h("td", {}, this.at(key.created_at), " by ", key.created_by),
        h("td", {}, key.expires_at === null ? "never" : this.at(key.expires_at)),
        h("td", {}, key.last_used_at === null ? "never" : this.at(key.last_used_at)),
        h("td", {}, action),
      );
    });
    const name = h("input", { id: "key-name", type: "text", required: true, maxlength: 200, autocomplete: "off" });
    const role = h("select", { id: "key-role" }, ...["viewer", "operator", "admin"].map((r) => h("option", { value: r }, r)));
    const days = h("input", { id: "key-days", type: "number", min: 1, step: 1, inputmode: "numeric", "aria-describedby": "key-days-help" });
    const create = h("button", { type: "submit" }, "Create key");
    const shown = h("div", { id: "new-key", "aria-live": "polite" });
    const form = h(
      "form",
      { class: "key-form", "aria-labelledby": "new-key-heading" },
      h("h2", { id: "new-key-heading" }, "New key"),
      h("div", {}, h("label", { for: "key-name" }, "Name"), name),
      h("div", {}, h("label", { for: "key-role" }, "Role"), role),
      h("div", {}, h("label", { for: "key-days" }, "Expires after (days)"), days, h("span", { id: "key-days-help", class: "muted" }, "Empty: never.")),
      create,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      let expires: string | null;
      try {
        expires = expiry(days.value, Date.now());
      } catch (error) {
        replace(this.status, h("span", { class: "error" }, errorText(error)));
        return;
      }
      create.disabled = true;
      this.api
        .send<CreatedKey>("POST", "/api/v1/api-keys", { name: name.value.trim(), role: role.value, expires_at: expires })
        .then(async (made) => {
          await this.drawKeys();
          this.showNewKey(made);
        })
        .catch((error: unknown) => {
          create.disabled = false;
          replace(this.status, h("span", { class: "error" }, `Not created: ${errorText(error)}`));
        });
    });
    replace(
      this.body,
      shown,
      table(["Prefix", "Name", "Role", "State", "Created", "Expires", "Last used", "Action"], rows, "keys"),
      form,
    );
  }

  /** The new key, shown this once: the API cannot show it again. */
  private showNewKey(made: CreatedKey): void {
    const box = document.getElementById("new-key");
    if (box === null) return;
    const value = h("input", { id: "new-key-value", type: "text", readonly: true, value: made.key, "aria-describedby": "new-key-help" });
    replace(
      box,
      h(
        "div",
        { class: "new-key" },
        h("p", {}, h("strong", {}, `Key "${made.name}" (${made.role}) created.`)),
        h("label", { for: "new-key-value" }, "The key"),
        value,
        h("p", { id: "new-key-help" }, "Store it now: it is shown this once and cannot be shown again."),
      ),
    );
    value.focus();
    value.select();
    replace(this.status, `Key ${made.prefix} created.`);
  }

  private revokeButton(key: ApiKey): HTMLButtonElement {
    const button = h("button", { type: "button", class: "revoke", "aria-label": `Revoke key ${key.prefix} (${key.name})` }, "Revoke");
    let armed = false;
    button.addEventListener("click", () => {
      // Two presses: the first asks, the second revokes (no browser dialog).
      if (!armed) {
        armed = true;
        replace(button, "Press again to revoke");
        button.setAttribute("aria-label", `Press again to revoke key ${key.prefix} (${key.name})`);
        return;
      }
      button.disabled = true;
      this.api
        .send<ApiKey>("DELETE", `/api/v1/api-keys/${encodeURIComponent(key.prefix)}`)
        .then(async () => {
          await this.drawKeys();
          replace(this.status, `Key ${key.prefix} revoked.`);
          this.status.focus();
        })
        .catch((error: unknown) => {
          button.disabled = false;
          replace(this.status, h("span", { class: "error" }, `Not revoked: ${errorText(error)}`));
        });
    });
    return button;
  }
}
