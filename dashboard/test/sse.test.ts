import { afterEach, describe, expect, it, vi } from "vitest";
import { backoffMs, SseParser, StreamClient, type StreamStatus } from "../src/sse";

describe("SseParser", () => {
  it("parses events with ids, kinds and data", () => {
    const parser = new SseParser();
    const events = parser.feed('id: 42\nevent: agent.status\ndata: {"a":1}\n\n');
    expect(events).toEqual([{ event: "agent.status", data: '{"a":1}', lastEventId: "42" }]);
    expect(parser.lastEventId).toBe("42");
  });

  it("joins events cut anywhere across chunks, CRLF split included", () => {
    const text = "id: 1\r\nevent: machine.state\r\ndata: one\r\ndata: two\r\n\r\nid: 2\r\ndata: x\r\n\r\n";
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new SseParser();
      const events = [...parser.feed(text.slice(0, cut)), ...parser.feed(text.slice(cut))];
      expect(events).toEqual([
        { event: "machine.state", data: "one\ntwo", lastEventId: "1" },
        { event: "message", data: "x", lastEventId: "2" },
      ]);
    }
  });

  it("takes CR alone as a line end", () => {
    expect(new SseParser().feed("data: a\r\rdata: b\r\r")).toEqual([
      { event: "message", data: "a", lastEventId: "" },
      { event: "message", data: "b", lastEventId: "" },
    ]);
  });

  it("ignores comments (heartbeats), unknown fields and empty events", () => {
    const parser = new SseParser();
    expect(parser.feed(": ping\n\nfoo: bar\n\nevent: x\n\n")).toEqual([]);
    // The type of an event without data does not leak into the next one.
    expect(parser.feed("data: y\n\n")).toEqual([{ event: "message", data: "y", lastEventId: "" }]);
  });

  it("keeps the value as sent: one leading space dropped, colons kept, no colon means empty", () => {
    const parser = new SseParser();
    expect(parser.feed("data:  two spaces: kept\ndata\n\n")).toEqual([
      { event: "message", data: " two spaces: kept\n", lastEventId: "" },
    ]);
  });

  it("keeps the last id across events, and refuses an id with NUL", () => {
    const parser = new SseParser();
    parser.feed("id: 7\ndata: a\n\n");
    expect(parser.feed("data: b\n\n")[0]?.lastEventId).toBe("7");
    parser.feed("id: 8\0\ndata: c\n\n");
    expect(parser.lastEventId).toBe("7");
  });

  it("reads retry, digits only", () => {
    const parser = new SseParser();
    parser.feed("retry: 1500\n\n");
    expect(parser.retryMs).toBe(1500);
    parser.feed("retry: soon\n\n");
    expect(parser.retryMs).toBe(1500);
  });

  it("parses the collector's reset and dropped events", () => {
    const events = new SseParser().feed(
      'event: reset\ndata: {"oldest": 1234}\n\nevent: dropped\ndata: {"reason": "slow"}\n\n',
    );
    expect(events.map((e) => [e.event, JSON.parse(e.data)])).toEqual([
      ["reset", { oldest: 1234 }],
      ["dropped", { reason: "slow" }],
    ]);
  });
});

describe("backoffMs", () => {
  it("doubles up to the ceiling, jittered between half and all", () => {
    expect(backoffMs(0, 500, 8000, 1)).toBe(500);
    expect(backoffMs(0, 500, 8000, 0)).toBe(250);
    expect(backoffMs(3, 500, 8000, 1)).toBe(4000);
    expect(backoffMs(10, 500, 8000, 1)).toBe(8000);
    expect(backoffMs(1000, 500, 8000, 0)).toBe(4000);
  });
});

/** A response whose body the test writes, chunk by chunk, and ends or breaks. */
function openBody(): { response: Response; send: (text: string) => void; end: () => void; fail: () => void } {
  let control!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      control = c;
    },
  });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } }),
    send: (text) => control.enqueue(encoder.encode(text)),
    end: () => control.close(),
    fail: () => control.error(new TypeError("network error")),
  };
}

async function until(condition: () => boolean): Promise<void> {
  await vi.waitFor(() => expect(condition()).toBe(true), { timeout: 2000, interval: 5 });
}

describe("StreamClient", () => {
  afterEach(() => vi.useRealTimers());

  it("sends the key as a bearer token, resumes with Last-Event-ID, and reports staleness", async () => {
    const bodies = [openBody(), openBody()];
    const calls: RequestInit[] = [];
    const fetcher = vi.fn(async (_url: RequestInfo | URL, init?: RequestInit) => {
      calls.push(init ?? {});
      const next = bodies[calls.length - 1];
      if (next === undefined) throw new TypeError("connection refused");
      return next.response;
    });
    const statuses: StreamStatus[] = [];
    const seen: string[] = [];
    const client = new StreamClient({
      url: "/api/v1/stream",
      key: () => "pwk_test",
      onEvent: (event) => seen.push(`${event.event}:${event.data}`),
      onStatus: (status) => statuses.push(status),
      onRefused: () => undefined,
      fetch: fetcher as typeof fetch,
      random: () => 0,
      baseDelayMs: 1,
    });
    const running = client.run();
    await until(() => statuses.includes("live"));
    bodies[0]?.send("id: 5\nevent: machine.state\ndata: {}\n\n: ping\n\n");
    await until(() => seen.length === 1);
    bodies[0]?.fail();
    await until(() => calls.length === 2);
    expect(statuses).toEqual(["connecting", "live", "reconnecting", "live"]);
    const first = calls[0]?.headers as Record<string, string>;
    const second = calls[1]?.headers as Record<string, string>;
    expect(first.Authorization).toBe("Bearer pwk_test");
    expect(first["Last-Event-ID"]).toBeUndefined();
    expect(second["Last-Event-ID"]).toBe("5");
    bodies[1]?.send("id: 6\nevent: dropped\ndata: {\"reason\": \"shutdown\"}\n\n");
    bodies[1]?.end();
    await until(() => calls.length >= 4);
    expect(client.lastEventId).toBe("6");
    expect(statuses.at(-1)).toBe("reconnecting");
    client.stop();
    await running;
    expect(statuses.at(-1)).toBe("stopped");
    expect(seen).toEqual(["machine.state:{}", 'dropped:{"reason": "shutdown"}']);
  });

  it("backs off while the collector is away", async () => {
    const fetcher = vi.fn(async () => {
      throw new TypeError("connection refused");
    });
    const delays: number[] = [];
    const realSetTimeout = globalThis.setTimeout;
    vi.spyOn(globalThis, "setTimeout").mockImplementation(((fn: () => void, ms?: number) => {
      if (ms !== 45000) delays.push(ms ?? 0);
      return realSetTimeout(fn, 0);
    }) as typeof setTimeout);
    const client = new StreamClient({
      url: "/s",
      key: () => "k",
      onEvent: () => undefined,
      onStatus: () => undefined,
      onRefused: () => undefined,
      fetch: fetcher as unknown as typeof fetch,
      random: () => 1,
      baseDelayMs: 100,
      maxDelayMs: 1000,
    });
    const running = client.run();
    await until(() => delays.length >= 6);
    client.stop();
    await running;
    vi.restoreAllMocks();
    expect(delays.slice(0, 6)).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it("stops when the key is refused", async () => {
    const refused: number[] = [];
    const statuses: StreamStatus[] = [];
    const client = new StreamClient({
      url: "/s",
      key: () => "revoked",
      onEvent: () => undefined,
      onStatus: (s) => statuses.push(s),
      onRefused: (status) => refused.push(status),
      fetch: (async () => new Response("{}", { status: 401 })) as typeof fetch,
    });
    await client.run();
    expect(refused).toEqual([401]);
    expect(statuses).toEqual(["connecting", "stopped"]);
  });

  it("does not connect without a key", async () => {
    const fetcher = vi.fn();
    const client = new StreamClient({
      url: "/s",
      key: () => null,
      onEvent: () => undefined,
      onStatus: () => undefined,
      onRefused: () => undefined,
      fetch: fetcher as unknown as typeof fetch,
    });
    await client.run();
    expect(fetcher).not.toHaveBeenCalled();
  });

  it("replaces a connection that went silent", async () => {
    const bodies = [openBody(), openBody()];
    let calls = 0;
    const statuses: StreamStatus[] = [];
    const client = new StreamClient({
      url: "/s",
      key: () => "k",
      onEvent: () => undefined,
      onStatus: (s) => statuses.push(s),
      onRefused: () => undefined,
      fetch: (async (_u: RequestInfo | URL, init?: RequestInit) => {
        const body = bodies[calls++];
        init?.signal?.addEventListener("abort", () => body?.fail());
        return body?.response ?? new Response(null, { status: 503 });
      }) as typeof fetch,
      idleMs: 30,
      baseDelayMs: 1,
    });
    const running = client.run();
    await until(() => calls >= 2);
    client.stop();
    await running;
    expect(statuses.slice(0, 3)).toEqual(["connecting", "live", "reconnecting"]);
  });
});
