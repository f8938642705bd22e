// The event stream read with fetch: EventSource cannot send an Authorization header, and the
// key must not travel in a URL. Parsing follows the HTML standard's event-stream rules;
// reconnecting sends Last-Event-ID, so the collector replays exactly what was missed.

export interface SseEvent {
  /** The event's type: "message" when the stream names none. */
  event: string;
  data: string;
  /** The last event id the stream has set, this event's or an earlier one's. */
  lastEventId: string;
}

/** Turns the stream's text, in chunks cut anywhere, into events. */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private type = "";
  private sawCr = false;
  lastEventId = "";
  /** The reconnection time the stream asked for (`retry:`), in milliseconds. */
  retryMs: number | null = null;

  /** Feed the next chunk; answers the events it completed. */
  feed(chunk: string): SseEvent[] {
    const events: SseEvent[] = [];
    let text = chunk;
    // A CR ending the last chunk already ended its line: an LF right after belongs to it.
    if (this.sawCr && text.startsWith("\n")) text = text.slice(1);
    this.sawCr = text.endsWith("\r");
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() ?? "";
    for (const line of lines) {
      const event = this.line(line);
      if (event !== null) events.push(event);
    }
    return events;
  }

  private line(line: string): SseEvent | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    return null;
  }

  private dispatch(): SseEvent | null {
    const data = this.data;
    const type = this.type;
    this.data = [];
    this.type = "";
    if (data.length === 0) return null;
    return { event: type || "message", data: data.join("\n"), lastEventId: this.lastEventId };
  }
}

/** Milliseconds to wait before reconnect attempt `attempt` (0 first): doubling from `baseMs`
 * up to `maxMs`, and jittered to between half and all of that so clients spread out. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling * (0.5 + random / 2));
}

export type StreamStatus = "connecting" | "live" | "reconnecting" | "stopped";

export interface StreamOptions {
  url: string;
  /** The API key now, or null when signed out (the stream then stops). */
  key: () => string | null;
  onEvent: (event: SseEvent) => void;
  onStatus: (status: StreamStatus) => void;
  /** The key was refused (401/403): the stream stops. */
  onRefused: (status: number) => void;
  fetch?: typeof fetch;
  random?: () => number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Nothing at all received for this long (heartbeats come every 15 s): the connection is
   * taken for dead and replaced. */
  idleMs?: number;
}

/** Reads the stream for as long as it runs, reconnecting with backoff. */
export class StreamClient {
  private readonly options: Required<StreamOptions>;
  private readonly parser = new SseParser();
  private controller: AbortController | null = null;
  private stopped = false;
  private wake: (() => void) | null = null;
  private status: StreamStatus | null = null;

  constructor(options: StreamOptions) {
    this.options = {
      fetch: globalThis.fetch.bind(globalThis),
      random: Math.random,
      baseDelayMs: 500,
      maxDelayMs: 8000,
      idleMs: 45000,
      ...options,
    };
  }

  /** The id the next connection resumes after ("" before any event). */
  get lastEventId(): string {
    return this.parser.lastEventId;
  }

  /** Run until stop(); resolves when stopped. */
  async run(): Promise<void> {
    let attempt = 0;
    let connected = false;
    while (!this.stopped) {
      this.setStatus(connected || attempt > 0 ? "reconnecting" : "connecting");
      const outcome = await this.connectOnce();
      if (outcome === "refused" || this.stopped) break;
      if (outcome === "read") {
        connected = true;
        attempt = 0;
      }
      this.setStatus("reconnecting");
      const wait = this.parser.retryMs ?? backoffMs(attempt, this.options.baseDelayMs,
        this.options.maxDelayMs, this.options.random());
      attempt += 1;
      await this.pause(outcome === "read" && attempt === 1 ? Math.min(wait, 250) : wait);
    }
    this.setStatus("stopped");
  }

  /** Stop reading and reconnecting. */
  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
  }

  private setStatus(status: StreamStatus): void {
    if (status === this.status) return;
    this.status = status;
    this.options.onStatus(status);
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  /** One connection: "refused" (stop), "read" (it was live, then ended) or "failed". */
  private async connectOnce(): Promise<"refused" | "read" | "failed"> {
    const key = this.options.key();
    if (key === null) return "refused";
    const controller = new AbortController();
    this.controller = controller;
    const headers: Record<string, string> = {
      Authorization: `Bearer ${key}`,
      Accept: "text/event-stream",
    };
    if (this.parser.lastEventId !== "") headers["Last-Event-ID"] = this.parser.lastEventId;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const watch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), this.options.idleMs);
    };
    try {
      watch();
      const response = await this.options.fetch(this.options.url, {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
      if (response.status === 401 || response.status === 403) {
        this.options.onRefused(response.status);
        return "refused";
      }
      if (!response.ok || response.body === null) return "failed";
      this.setStatus("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return "read";
        watch();
        for (const event of this.parser.feed(value)) this.options.onEvent(event);
      }
    } catch {
      // A refused connection, a reset, an abort: all mean "try again" (or stop, if asked).
      return this.status === "live" ? "read" : "failed";
    } finally {
      clearTimeout(idle);
      this.controller = null;
    }
  }
}
