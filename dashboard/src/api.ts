// Calls to the collector's API: every one with Authorization: Bearer, none with the key in
// the URL. Errors are the API's problem documents.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
  ) {
    super(`${status} ${title}: ${detail}`);
  }
}

export type Query = Record<string, string | number | boolean | null | undefined>;

/** A path with its query; null and undefined parameters are left out. */
export function withQuery(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined) params.set(name, String(value));
  }
  const text = params.toString();
  return text === "" ? path : `${path}?${text}`;
}

export class Api {
  constructor(
    private readonly key: () => string | null,
    private readonly onRefused: (status: number) => void,
    private readonly fetcher: typeof fetch = globalThis.fetch.bind(globalThis),
  ) {}

  /** GET a JSON document; an ApiError for any answer but 2xx. */
  async get<T>(path: string, query: Query = {}): Promise<T> {
    const key = this.key();
    if (key === null) throw new ApiError(401, "Unauthorized", "signed out");
    const response = await this.fetcher(withQuery(path, query), {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) throw await this.refusal(response);
    return (await response.json()) as T;
  }

  /** A POST, PATCH or DELETE with a JSON body (or none); the JSON answer, or an ApiError. */
  async send<T>(method: "POST" | "PATCH" | "DELETE", path: string, body?: unknown): Promise<T> {
    const key = this.key();
    if (key === null) throw new ApiError(401, "Unauthorized", "signed out");
    const headers: Record<string, string> = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.fetcher(path, {
      method,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
      cache: "no-store",
    });
    if (!response.ok) throw await this.refusal(response);
    return (await response.json()) as T;
  }

  /** The ApiError of an answer that is not 2xx, from its problem document where it has one. */
  private async refusal(response: Response): Promise<ApiError> {
    let title = response.statusText;
    let detail = "";
    try {
      const problem = (await response.json()) as { title?: unknown; detail?: unknown };
      if (typeof problem.title === "string") title = problem.title;
      if (typeof problem.detail === "string") detail = problem.detail;
    } catch {
      // Not a problem document (a proxy's page): the status says enough.
    }
    if (response.status === 401) this.onRefused(response.status);
    return new ApiError(response.status, title, detail);
  }

  /** Every page of a listing that answers `next` links. */
  async all<T, K extends string>(path: string, field: K, query: Query = {}): Promise<T[]> {
    const items: T[] = [];
    let next: string | null = withQuery(path, query);
    while (next !== null) {
      const page: Record<K, T[]> & { next: string | null } = await this.get(next);
      items.push(...page[field]);
      next = page.next;
    }
    return items;
  }
}
