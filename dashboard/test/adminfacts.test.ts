import { describe, expect, it } from "vitest";
import { type AgentDetail, type ApiKey, bufferFacts, type DeadLetter, expiry, keyState, letterState } from "../src/adminfacts";

const NOW = Date.parse("2026-11-27T12:00:00Z");
const KEY: ApiKey = {
  prefix: "3f9a1c07",
  name: "ops",
  role: "viewer",
  created_at: "2026-11-01T00:00:00Z",
  created_by: "cli",
  expires_at: null,
  revoked_at: null,
  last_used_at: null,
  active: true,
};

describe("keyState", () => {
  it("says active, revoked or expired with a shape", () => {
    expect(keyState(KEY, NOW)).toEqual({ shape: "✓", word: "Active" });
    expect(keyState({ ...KEY, expires_at: "2026-11-28T00:00:00Z" }, NOW).word).toBe("Active");
    expect(keyState({ ...KEY, expires_at: "2026-11-27T12:00:00Z" }, NOW).word).toBe("Expired");
    expect(keyState({ ...KEY, revoked_at: "2026-11-02T00:00:00Z", expires_at: "2026-01-01T00:00:00Z" }, NOW).word).toBe("Revoked");
  });
});

describe("expiry", () => {
  it("is never for an empty field, else whole days from now", () => {
    expect(expiry("  ", NOW)).toBeNull();
    expect(expiry("30", NOW)).toBe("2026-12-27T12:00:00.000Z");
  });
  it("refuses what is not a whole number of days", () => {
    for (const bad of ["0", "-1", "1.5", "x"]) expect(() => expiry(bad, NOW)).toThrow(/whole number/);
  });
});

describe("bufferFacts", () => {
  const agent: AgentDetail = {
    agent: "a",
    status: "online",
    status_since: "2026-11-27T11:00:00Z",
    first_seen: "2026-11-01T00:00:00Z",
    last_seen: "2026-11-27T11:59:00Z",
    version: "1.0",
    config_hash: "h",
    devices: ["press-1"],
    epoch: 1,
    last_heartbeat: { buffer: { readings: 1200, oldest_age_s: 75, in_flight: 0, dropped_oldest: 2, dropped_newest: 3, used_bytes: 4096 } },
    last_heartbeat_at: "2026-11-27T11:59:00Z",
  };
  it("reads the buffer of the last heartbeat", () => {
    expect(bufferFacts(agent)).toEqual([
      ["Buffered readings", "1,200"],
      ["Oldest unsent", "1 min 15 s"],
      ["In flight", "0"],
      ["Dropped", "5"],
      ["Buffer size", "4,096 bytes"],
    ]);
  });
  it("shows dashes with no heartbeat, and ignores what is not a number", () => {
    expect(bufferFacts({ ...agent, last_heartbeat: null }).map(([, v]) => v)).toEqual(["–", "–", "–", "–", "–"]);
    expect(bufferFacts({ ...agent, last_heartbeat: { buffer: { readings: "many" } } })[0]).toEqual(["Buffered readings", "–"]);
  });
});

describe("letterState", () => {
  const letter: DeadLetter = {
    id: 1,
    received_at: "2026-11-27T11:00:00Z",
    topic: "t",
    agent: null,
    kind: "batch",
    reason: "malformed",
    error: "bad",
    readings: 0,
    partial: false,
    replayed_at: null,
    replay_error: null,
    payload_bytes: 3,
  };
  it("says held, replayed, or why a replay failed", () => {
    expect(letterState(letter)).toBe("Held");
    expect(letterState({ ...letter, replayed_at: "2026-11-27T11:30:00Z" })).toBe("Replayed");
    expect(letterState({ ...letter, replayed_at: "2026-11-27T11:30:00Z", replay_error: "still bad" })).toBe("Replay failed: still bad");
  });
});
