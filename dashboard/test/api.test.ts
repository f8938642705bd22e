import { describe, expect, it, vi } from "vitest";
import { Api, ApiError } from "../src/api";

function answering(status: number, body: unknown) {
  return vi.fn(async (_url: RequestInfo | URL, _init?: RequestInit) =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } }),
  );
}

describe("Api.send", () => {
  it("sends JSON with the key in the header, never in the URL", async () => {
    const fetcher = answering(201, { ok: 1 });
    const api = new Api(() => "pwk_key", () => undefined, fetcher as unknown as typeof fetch);
    expect(await api.send("POST", "/api/v1/x", { a: "<b>" })).toEqual({ ok: 1 });
    const [url, init] = fetcher.mock.calls[0] ?? [];
    expect(url).toBe("/api/v1/x");
    expect(init?.method).toBe("POST");
    expect(init?.body).toBe('{"a":"<b>"}');
    expect((init?.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
    expect((init?.headers as Record<string, string>).Authorization).toBe("Bearer pwk_key");
  });
  it("sends no body and no content type when there is none", async () => {
    const fetcher = answering(200, { revoked: true });
    const api = new Api(() => "k", () => undefined, fetcher as unknown as typeof fetch);
    expect(await api.send("DELETE", "/api/v1/x/1")).toEqual({ revoked: true });
    const init = fetcher.mock.calls[0]?.[1];
    expect(init?.body ?? null).toBeNull();
    expect((init?.headers as Record<string, string>)["Content-Type"]).toBeUndefined();
  });
  it("throws the problem's detail, and reports a refused key", async () => {
    const refused = vi.fn();
    const api = new Api(() => "k", refused, answering(403, { title: "Forbidden", detail: "needs operator" }) as unknown as typeof fetch);
    await expect(api.send("POST", "/x", {})).rejects.toEqual(new ApiError(403, "Forbidden", "needs operator"));
    expect(refused).not.toHaveBeenCalled();
    const api401 = new Api(() => "k", refused, answering(401, {}) as unknown as typeof fetch);
    await expect(api401.get("/x")).rejects.toBeInstanceOf(ApiError);
    expect(refused).toHaveBeenCalledWith(401);
  });
});
