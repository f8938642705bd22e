// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Api } from "../src/api";
import type { CommandItem } from "../src/alertview";
import { CommandsPage } from "../src/commands";

const SENT: CommandItem = {
  id: "0b6f1c1e-0000-4000-8000-000000000001",
  agent: "press-agent",
  device: "sim-modbus",
  tag: "speed_setpoint",
  value: 7000,
  status: "sent",
  reason: null,
  value_before: null,
  value_after: null,
  requested_by: "7e57ab1e",
  requested_by_name: "op",
  requested_at: "2026-11-27T12:00:00Z",
};

/** A collector that knows one command, whose state the test sets; it records what it is asked. */
function collector(): { fetcher: typeof fetch; asked: string[]; sent: unknown[]; command: CommandItem } {
  const state = { fetcher: null as unknown as typeof fetch, asked: [] as string[], sent: [] as unknown[], command: { ...SENT } };
  const json = (body: unknown, status = 200): Response =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
  state.fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    state.asked.push(`${init?.method ?? "GET"} ${url}`);
    if (url.startsWith("/api/v1/equipment")) return json({ enterprise: "e", sites: [{ id: "s", name: null, time_zone: "Europe/Berlin", areas: [] }] });
    if (url.startsWith("/api/v1/agents")) return json({ agents: [{ agent: "press-agent" }], next: null });
    if (url === `/api/v1/commands/${SENT.id}`) return json(state.command);
    if (url.startsWith("/api/v1/commands") && init?.method === "POST") {
      state.sent.push(JSON.parse(String(init.body)));
      return json(SENT, 202);
    }
    if (url.startsWith("/api/v1/commands")) return json({ items: [state.command], next: null });
    return json({ title: "Not Found", detail: url }, 404);
  }) as typeof fetch;
  return state;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

function fill(root: HTMLElement, values: Record<string, string>): void {
  for (const [name, value] of Object.entries(values)) {
    (root.querySelector(`#command-${name}`) as HTMLInputElement).value = value;
  }
  root.querySelector("form")?.dispatchEvent(new Event("submit", { cancelable: true }));
}

function answer(root: HTMLElement): HTMLElement {
  return root.querySelector("#command-answer .command-answer") as HTMLElement;
}

describe("the commands page", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends the form's command and shows the answer it asks for while the stream is silent", async () => {
    const server = collector();
    const root = document.createElement("main");
    const errors: unknown[] = [];
    const page = new CommandsPage(new Api(() => "k", () => undefined, server.fetcher), root, "operator", (e) => errors.push(e));
    await page.start();
    expect(root.querySelector("#command-agents option")?.getAttribute("value")).toBe("press-agent");
    fill(root, { agent: "press-agent", device: "sim-modbus", tag: "speed_setpoint", value: "7000", expires_in: "30" });
    await settle();
    expect(server.sent).toEqual([{ agent: "press-agent", device: "sim-modbus", tag: "speed_setpoint", value: 7000, expires_in: 30 }]);
    expect(answer(root).dataset.status).toBe("sent");

    // Still open at the first look; applied at the next.
    await vi.advanceTimersByTimeAsync(2000);
    await settle();
    expect(answer(root).dataset.status).toBe("sent");
    server.command = { ...SENT, status: "applied", value_before: 12000, value_after: 7000 };
    await vi.advanceTimersByTimeAsync(2000);
    await settle();
    expect(answer(root).dataset.status).toBe("applied");
    expect(answer(root).textContent).toContain("was 12000, now reads 7000.");
    // Ended: no more asking.
    const asks = server.asked.filter((a) => a.endsWith(SENT.id)).length;
    await vi.advanceTimersByTimeAsync(6000);
    await settle();
    expect(server.asked.filter((a) => a.endsWith(SENT.id)).length).toBe(asks);
    expect(errors).toEqual([]);
    page.stop();
  });

  it("takes the answer from the stream for the command it waits for only", async () => {
    const server = collector();
    const root = document.createElement("main");
    const page = new CommandsPage(new Api(() => "k", () => undefined, server.fetcher), root, "admin", () => undefined);
    await page.start();
    fill(root, { agent: "press-agent", device: "sim-modbus", tag: "speed_setpoint", value: "16000" });
    await settle();
    const event = (body: CommandItem) => ({ event: "command.result", data: JSON.stringify({ body }), lastEventId: "1" });
    page.onEvent(event({ ...SENT, id: "another", status: "applied" }));
    expect(answer(root).dataset.status).toBe("sent");
    page.onEvent(event({ ...SENT, status: "refused", reason: "16000 is above commands.allow[0].max 15000" }));
    expect(answer(root).dataset.status).toBe("refused");
    expect(answer(root).textContent).toContain("The agent refused: 16000 is above");
    page.onEvent({ event: "machine.state", data: "{}", lastEventId: "2" });
    page.stop();
  });

  it("names a value not of its type and sends nothing; says a viewer cannot use it", async () => {
    const server = collector();
    const root = document.createElement("main");
    const page = new CommandsPage(new Api(() => "k", () => undefined, server.fetcher), root, "operator", () => undefined);
    await page.start();
    fill(root, { agent: "a", device: "d", tag: "t", value: "fast" });
    expect(root.querySelector("#command-error")?.textContent).toBe('value: "fast" is not a number');
    fill(root, { agent: "a", device: "d", tag: "t", value: "1", expires_in: "-5" });
    expect(root.querySelector("#command-error")?.textContent).toBe("expires in: a number of seconds above 0");
    expect(server.sent).toEqual([]);

    const viewerRoot = document.createElement("main");
    const viewer = new CommandsPage(new Api(() => "k", () => undefined, server.fetcher), viewerRoot, "viewer", () => undefined);
    await viewer.start();
    await viewer.reload();
    expect(viewerRoot.textContent).toContain("need an operator or admin key; this key is a viewer's.");
    expect(viewerRoot.querySelector("form")).toBeNull();
  });
});
