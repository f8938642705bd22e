// What the admin pages say about keys, agents and dead letters. Pure functions, tested.

import { count, duration } from "./format";

export interface ApiKey {
  prefix: string;
  name: string;
  role: string;
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  active: boolean;
}
export interface CreatedKey extends ApiKey {
  key: string;
}
export interface AgentDetail {
  agent: string;
  status: string;
  status_since: string;
  first_seen: string;
  last_seen: string;
  version: string | null;
  config_hash: string | null;
  devices: string[] | null;
  epoch: number | null;
  last_heartbeat: Record<string, unknown> | null;
  last_heartbeat_at: string | null;
}
export interface DeadLetter {
  id: number;
  received_at: string;
  topic: string;
  agent: string | null;
  kind: string;
  reason: string;
  error: string;
  readings: number;
  partial: boolean;
  replayed_at: string | null;
  replay_error: string | null;
  payload_bytes: number;
}

/** A key's state in a word (with a shape, never colour alone): active, revoked or expired. */
export function keyState(key: ApiKey, now: number): { shape: string; word: string } {
  if (key.revoked_at !== null) return { shape: "✕", word: "Revoked" };
  if (key.expires_at !== null && Date.parse(key.expires_at) <= now) return { shape: "⌛", word: "Expired" };
  return { shape: "✓", word: "Active" };
}

/** When a key made now to last `days` days expires (RFC 3339); null for never. */
export function expiry(days: string, now: number): string | null {
  const text = days.trim();
  if (text === "") return null;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error("days must be a whole number of at least 1");
  return new Date(now + n * 86_400_000).toISOString();
}

function numberAt(record: Record<string, unknown> | null | undefined, key: string): number | null {
  const value = record?.[key];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** An agent's buffer as its last heartbeat told it: [label, value] pairs to show. */
export function bufferFacts(agent: AgentDetail): [string, string][] {
  const buffer = agent.last_heartbeat?.buffer;
  const b = typeof buffer === "object" && buffer !== null ? (buffer as Record<string, unknown>) : null;
  const dropped = (numberAt(b, "dropped_oldest") ?? 0) + (numberAt(b, "dropped_newest") ?? 0);
  return [
    ["Buffered readings", count(numberAt(b, "readings"))],
    ["Oldest unsent", duration(numberAt(b, "oldest_age_s"))],
    ["In flight", count(numberAt(b, "in_flight"))],
    ["Dropped", b === null ? count(null) : count(dropped)],
    ["Buffer size", numberAt(b, "used_bytes") === null ? count(null) : `${count(numberAt(b, "used_bytes"))} bytes`],
  ];
}

/** A dead letter's state: replayed (and how it went) or held. */
export function letterState(letter: DeadLetter): string {
  if (letter.replayed_at === null) return "Held";
  return letter.replay_error === null ? "Replayed" : `Replay failed: ${letter.replay_error}`;
}
