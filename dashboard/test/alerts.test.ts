// @vitest-environment happy-dom
import { describe, expect, it } from "vitest";
import { Api } from "../src/api";
import type { AlertItem } from "../src/alertview";
import { ActiveAlertsPanel, AlertsPage } from "../src/alerts";

function alert(id: number, more: Partial<AlertItem> = {}): AlertItem {
  return {
    id,
    rule_id: "ar_000000000000000000000001",
    kind: "tag_threshold",
    subject: `a/d/t${id}`,
    state: "firing",
    started_at: `2026-11-27T12:0${id}:00Z`,
    fired_at: `2026-11-27T12:0${id}:00Z`,
    resolved_at: null,
    resolved_reason: null,
    value: 90,
    late: false,
    acknowledged_at: null,
    acknowledged_by: null,
    ack_comment: null,
    recorded_at: `2026-11-27T12:0${id}:00Z`,
    updated_at: `2026-11-27T12:0${id}:00Z`,
    ...more,
  };
}

const FIRST = alert(1);
const THEIRS = { acknowledged_at: "2026-11-27T12:05:00Z", acknowledged_by: "sam (key 1234abcd)", ack_comment: "on it" };

/** A collector with alert 1 firing, which answers acknowledgements with `ack`. */
function collector(ack: (body: unknown) => Response): typeof fetch {
  const json = (body: unknown, status = 200): Response =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    if (url.startsWith("/api/v1/equipment")) return json({ enterprise: "e", sites: [{ id: "s", name: null, time_zone: "Europe/Berlin", areas: [] }] });
    if (url === "/api/v1/alerts/1/acknowledge") return ack(JSON.parse(String(init?.body)));
    if (url === "/api/v1/alerts/1") return json({ ...FIRST, ...THEIRS, updated_at: "2026-11-27T12:05:00Z" });
    if (url.includes("state=pending")) return json({ items: [], next: null });
    if (url.startsWith("/api/v1/alerts")) return json({ items: [FIRST], next: null });
    return json({ title: "Forbidden", detail: url }, 403);
  }) as typeof fetch;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

function event(kind: string, body: AlertItem): { event: string; data: string; lastEventId: string } {
  return { event: kind, data: JSON.stringify({ kind, body }), lastEventId: "1" };
}

describe("the alerts page", () => {
  it("keeps a comment being typed while alerts change live, and acknowledges with it", async () => {
    const asked: unknown[] = [];
    const fetcher = collector((body) => {
      asked.push(body);
      return new Response(JSON.stringify({ ...FIRST, acknowledged_at: "2026-11-27T12:06:00Z", acknowledged_by: "me (key 00000000)", ack_comment: "<b>x</b>", updated_at: "2026-11-27T12:06:00Z" }));
    });
    const root = document.createElement("main");
    document.body.replaceChildren(root);
    const page = new AlertsPage(new Api(() => "k", () => undefined, fetcher), root, "operator", () => undefined);
    await page.start();
    expect(page.zone()).toBe("Europe/Berlin");
    const input = root.querySelector("#ack-comment-1") as HTMLInputElement;
    input.value = "<b>x</b>";
    input.focus();
    page.onEvent(event("alert.firing", alert(2)));
    expect(root.querySelectorAll(".alert-card")).toHaveLength(2);
    expect(root.querySelector(".alert-card")?.getAttribute("data-alert-id")).toBe("2");
    expect((root.querySelector("#ack-comment-1") as HTMLInputElement).value).toBe("<b>x</b>");
    expect(document.activeElement?.id).toBe("ack-comment-1");

    root.querySelector('[data-alert-id="1"] form')?.dispatchEvent(new Event("submit", { cancelable: true }));
    await settle();
    expect(asked).toEqual([{ comment: "<b>x</b>" }]);
    const done = root.querySelector('.alert-card[data-alert-id="1"] .acknowledged');
    expect(done?.textContent).toContain("Acknowledged by me (key 00000000) at 2026-11-27 13:06:00: “<b>x</b>”");
    expect(root.querySelector("b")).toBeNull();
    expect(root.querySelector('[data-alert-id="1"] form')).toBeNull();

    // Resolved: out of the active ones, still in the recent table; unknown events change nothing.
    page.onEvent(event("alert.resolved", alert(1, { state: "resolved", resolved_at: "2026-11-27T12:07:00Z", resolved_reason: "cleared", updated_at: "2026-11-27T12:07:00Z" })));
    page.onEvent({ event: "agent.status", data: "{}", lastEventId: "2" });
    expect(root.querySelectorAll(".alert-card")).toHaveLength(1);
    expect(root.querySelector('tr[data-alert-id="1"]')?.textContent).toContain("(cleared)");
    page.stop();
  });

  it("shows whose acknowledgement was first when the API answers 409", async () => {
    const fetcher = collector(
      () => new Response(JSON.stringify({ title: "Already acknowledged", detail: "alert 1 was acknowledged by sam" }), { status: 409 }),
    );
    const root = document.createElement("main");
    const page = new AlertsPage(new Api(() => "k", () => undefined, fetcher), root, "operator", () => undefined);
    await page.start();
    root.querySelector('[data-alert-id="1"] form')?.dispatchEvent(new Event("submit", { cancelable: true }));
    await settle();
    expect(root.querySelector('[data-alert-id="1"] .acknowledged')?.textContent).toContain("sam (key 1234abcd)");
    expect(root.querySelector('[data-alert-id="1"] .acknowledged')?.textContent).toContain("“on it”");
  });

  it("gives a viewer a disabled button and the reason, and no rules", async () => {
    const root = document.createElement("main");
    const page = new AlertsPage(new Api(() => "k", () => undefined, collector(() => new Response("{}"))), root, "viewer", () => undefined);
    await page.start();
    const button = root.querySelector("button.ack") as HTMLButtonElement;
    expect(button.disabled).toBe(true);
    expect(root.querySelector(`#${button.getAttribute("aria-describedby")}`)?.textContent).toBe(
      "Acknowledging needs an operator or admin key; this key is a viewer's.",
    );
    expect(root.querySelector("form")).toBeNull();
    expect(root.textContent).not.toContain("Alert rules");
  });
});

describe("the overview's panel", () => {
  it("lists the active alerts and follows the stream", async () => {
    const panel = new ActiveAlertsPanel(new Api(() => "k", () => undefined, collector(() => new Response("{}"))), () => "UTC");
    await panel.refresh();
    expect(panel.element.querySelectorAll("li")).toHaveLength(1);
    panel.onEvent(event("alert.pending", alert(3, { state: "pending", late: true })));
    expect(panel.element.querySelector('li[data-state="pending"]')?.textContent).toContain("⏱ late");
    panel.onEvent(event("alert.resolved", alert(1, { state: "resolved", updated_at: "2026-11-27T12:09:00Z" })));
    panel.onEvent(event("alert.resolved", alert(3, { state: "resolved", updated_at: "2026-11-27T12:09:00Z" })));
    expect(panel.element.textContent).toContain("No alert is pending or firing.");
  });
});
