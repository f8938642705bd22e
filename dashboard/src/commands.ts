// The commands page (operator and admin): a form that asks an agent to write a value to a
// tag, the agent's answer when it comes (the stream's command.result, or asking the API while
// the stream is away), and the recent audit.

import type { Api } from "./api";
import { h, replace } from "./dom";
import { clock } from "./format";
import { errorText, siteZone } from "./alerts";
import { type CommandItem, commandValue, isOpen, outcome } from "./alertview";
import { allows, type Role } from "./session";
import type { SseEvent } from "./sse";
import type { Agent } from "./types";

const RECENT = 50;
const POLL_MS = 2000;

interface CommandPage {
  items: CommandItem[];
  next: string | null;
}

function shown(value: CommandItem["value"] | null): string {
  return value === null ? "–" : JSON.stringify(value);
}

function badge(command: CommandItem): HTMLElement {
  const look = outcome(command);
  return h(
    "span",
    { class: `command-status ${look.tone}` },
    h("span", { class: "shape", "aria-hidden": "true" }, look.shape),
    " ",
    h("span", { class: "command-word" }, look.word),
  );
}

export class CommandsPage {
  private siteZoneName = Intl.DateTimeFormat().resolvedOptions().timeZone;
  private readonly audit = h("tbody");
  private readonly agents = h("datalist", { id: "command-agents" });
  private readonly answer = h("div", { id: "command-answer", role: "status", "aria-live": "polite" });
  private readonly message = h("p", { class: "error", role: "alert", id: "command-error" });
  /** The command sent from this page whose answer is awaited. */
  private waiting: string | null = null;
  private poll: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly api: Api,
    private readonly root: HTMLElement,
    private readonly role: Role,
    private readonly onError: (error: unknown) => void,
  ) {}

  async start(): Promise<void> {
    if (!allows(this.role, "operator")) {
      replace(
        this.root,
        h("h1", {}, "Commands"),
        h("p", {}, `Commands and their audit need an operator or admin key; this key is a ${this.role}'s.`),
      );
      return;
    }
    replace(
      this.root,
      h("h1", {}, "Commands"),
      this.form(),
      h("section", { "aria-labelledby": "answer-heading" }, h("h2", { id: "answer-heading" }, "The agent's answer"), this.answer),
      h(
        "section",
        { "aria-labelledby": "audit-heading" },
        h("h2", { id: "audit-heading" }, `Recent commands: the latest ${RECENT}`),
        h(
          "div",
          { class: "table-scroll", tabindex: 0, role: "region", "aria-labelledby": "audit-heading" },
          h(
            "table",
            { class: "commands" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["Asked at", "By", "Agent", "Device / tag", "Value", "Status", "Before → after", "Reason"].map(
                  (name) => h("th", { scope: "col" }, name),
                ),
              ),
            ),
            this.audit,
          ),
        ),
      ),
    );
    replace(this.answer, h("p", { class: "muted" }, "Nothing sent from this page yet."));
    await this.reload();
  }

  stop(): void {
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
  }

  async reload(): Promise<void> {
    if (!allows(this.role, "operator")) return;
    const [zone, agents] = await Promise.all([
      siteZone(this.api),
      this.api.all<Agent, "agents">("/api/v1/agents", "agents", { limit: 1000 }),
    ]);
    this.siteZoneName = zone;
    replace(this.agents, ...agents.map((agent) => h("option", { value: agent.agent })));
    await this.refreshAudit();
    if (this.waiting !== null) await this.check(this.waiting);
  }

  onEvent(event: SseEvent): void {
    if (event.event !== "command.result") return;
    const body = (JSON.parse(event.data) as { body: CommandItem }).body;
    if (body.id === this.waiting) this.show(body);
    this.refreshAudit().catch(this.onError);
  }

  zone(): string {
    return this.siteZoneName;
  }

  private form(): HTMLFormElement {
    const field = (name: string, label: string, attrs: Record<string, string | boolean> = {}): HTMLElement[] => [
      h("label", { for: `command-${name}` }, label),
      h("input", { id: `command-${name}`, name, type: "text", autocomplete: "off", ...attrs }),
    ];
    const type = h(
      "select",
      { id: "command-type", name: "type" },
      h("option", { value: "number" }, "number"),
      h("option", { value: "boolean" }, "true or false"),
      h("option", { value: "text" }, "text"),
    );
    const button = h("button", { type: "submit" }, "Send command");
    const form = h(
      "form",
      { class: "grid-form", "aria-labelledby": "command-form-heading", "aria-describedby": "command-help" },
      h("h2", { id: "command-form-heading" }, "Write a value to a tag"),
      h(
        "p",
        { id: "command-help", class: "muted wide" },
        "The agent writes only tags its configuration marks writable and its commands.allow permits, within their bounds; it refuses anything else and says why.",
      ),
      ...field("agent", "Agent", { required: true, list: "command-agents" }),
      this.agents,
      ...field("device", "Device", { required: true }),
      ...field("tag", "Tag", { required: true }),
      h("label", { for: "command-type" }, "Value type"),
      type,
      ...field("value", "Value", { required: true }),
      ...field("expires_in", "Expires in (seconds; empty: the collector's default)", { inputmode: "decimal" }),
      button,
      this.message,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = (name: string): string => (form.elements.namedItem(name) as HTMLInputElement).value.trim();
      let body: Record<string, unknown>;
      try {
        const expires = value("expires_in");
        const expiresIn = expires === "" ? undefined : Number(expires);
        if (expiresIn !== undefined && !(Number.isFinite(expiresIn) && expiresIn > 0)) {
          throw new Error("expires in: a number of seconds above 0");
        }
        body = {
          agent: value("agent"),
          device: value("device"),
          tag: value("tag"),
          value: commandValue(value("value"), type.value),
          ...(expiresIn === undefined ? {} : { expires_in: expiresIn }),
        };
      } catch (error) {
        replace(this.message, errorText(error));
        return;
      }
      button.disabled = true;
      this.api
        .send<CommandItem>("POST", "/api/v1/commands", body)
        .then((made) => {
          replace(this.message);
          this.follow(made);
          return this.refreshAudit();
        })
        .catch((error: unknown) => replace(this.message, `Not sent: ${errorText(error)}`))
        .finally(() => {
          button.disabled = false;
        });
    });
    return form;
  }

  /** Wait for `made`'s answer: from the stream, and by asking now and then in case the
   * stream is away (the answer's event is then replayed, or missed past the replay window). */
  private follow(made: CommandItem): void {
    this.stop();
    this.waiting = made.id;
    this.show(made);
    this.poll = setInterval(() => {
      if (this.waiting !== null) this.check(this.waiting).catch(this.onError);
    }, POLL_MS);
  }

  private async check(id: string): Promise<void> {
    const found = await this.api.get<CommandItem>(`/api/v1/commands/${id}`);
    if (found.id === this.waiting) this.show(found);
  }

  private show(command: CommandItem): void {
    const look = outcome(command);
    if (!isOpen(command.status)) {
      this.stop();
      this.waiting = null;
    }
    replace(
      this.answer,
      h(
        "p",
        { class: "command-answer", "data-status": command.status, "data-command-id": command.id },
        badge(command),
        ` ${command.agent}: ${command.device}/${command.tag} := ${shown(command.value)}. `,
        h("span", { class: "command-detail" }, look.detail),
      ),
    );
  }

  private async refreshAudit(): Promise<void> {
    const page = await this.api.get<CommandPage>("/api/v1/commands", { limit: RECENT });
    const zone = this.siteZoneName;
    replace(
      this.audit,
      ...(page.items.length > 0
        ? page.items.map((c) =>
            h(
              "tr",
              { "data-command-id": c.id, "data-status": c.status },
              h("td", {}, clock(c.requested_at, zone, true)),
              h("td", {}, c.requested_by_name ?? c.requested_by),
              h("td", {}, c.agent),
              h("th", { scope: "row" }, `${c.device}/${c.tag}`),
              h("td", {}, shown(c.value)),
              h("td", {}, badge(c)),
              h("td", {}, `${shown(c.value_before)} → ${shown(c.value_after)}`),
              h("td", { class: "wrap" }, c.reason ?? ""),
            ),
          )
        : [h("tr", {}, h("td", { colspan: 8 }, "No command yet."))]),
    );
  }
}
