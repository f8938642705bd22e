import { describe, expect, it } from "vitest";
import {
  type AlertItem,
  type CommandItem,
  alertFromEvent,
  alertLook,
  commandValue,
  isActive,
  isOpen,
  outcome,
  thresholdRule,
  upsert,
} from "../src/alertview";

function alert(id: number, started: string, more: Partial<AlertItem> = {}): AlertItem {
  return {
    id,
    rule_id: "ar_000000000000000000000001",
    kind: "tag_threshold",
    subject: "a/d/t",
    state: "firing",
    started_at: started,
    fired_at: started,
    resolved_at: null,
    resolved_reason: null,
    value: 90,
    late: false,
    acknowledged_at: null,
    acknowledged_by: null,
    ack_comment: null,
    recorded_at: started,
    updated_at: started,
    ...more,
  };
}

const FORM = {
  name: " hot ",
  agent: "",
  device: "press-1",
  tag: "temperature",
  direction: "above",
  threshold: "80",
  clear_threshold: "",
  hold_seconds: "",
};

function command(status: string, more: Partial<CommandItem> = {}): CommandItem {
  return {
    id: "c1",
    agent: "a",
    device: "sim-modbus",
    tag: "speed_setpoint",
    value: 7000,
    status,
    reason: null,
    value_before: null,
    value_after: null,
    requested_by: "7e57ab1e",
    ...more,
  };
}

describe("alert states", () => {
  it("have a shape and a word besides a colour, and unknown ones say what they are", () => {
    expect(alertLook("firing")).toEqual({ shape: "▲", word: "Firing", tone: "tone-stop" });
    expect(alertLook("pending").word).toBe("Pending");
    expect(alertLook("resolved").shape).toBe("✓");
    expect(alertLook("odd")).toEqual({ shape: "?", word: "odd", tone: "tone-unknown" });
  });
  it("are active while pending or firing", () => {
    expect(isActive(alert(1, "2026-01-01T00:00:00Z"))).toBe(true);
    expect(isActive(alert(1, "2026-01-01T00:00:00Z", { state: "pending" }))).toBe(true);
    expect(isActive(alert(1, "2026-01-01T00:00:00Z", { state: "resolved" }))).toBe(false);
  });
});

describe("upsert", () => {
  it("keeps the latest start first and replaces an alert by its id", () => {
    let list = upsert([], alert(1, "2026-01-01T00:00:00Z"));
    list = upsert(list, alert(2, "2026-01-01T00:01:00Z"));
    list = upsert(list, alert(3, "2026-01-01T00:01:00Z"));
    expect(list.map((a) => a.id)).toEqual([3, 2, 1]);
    const resolved = alert(2, "2026-01-01T00:01:00Z", { state: "resolved", updated_at: "2026-01-01T00:05:00Z" });
    list = upsert(list, resolved);
    expect(list.map((a) => [a.id, a.state])).toEqual([[3, "firing"], [2, "resolved"], [1, "firing"]]);
  });
  it("ignores a change older than the one it has", () => {
    const newer = alert(1, "2026-01-01T00:00:00Z", { state: "resolved", updated_at: "2026-01-01T00:09:00Z" });
    const list = [newer];
    expect(upsert(list, alert(1, "2026-01-01T00:00:00Z"))).toBe(list);
  });
});

describe("alertFromEvent", () => {
  it("reads the alert of alert.* events only", () => {
    const body = alert(7, "2026-01-01T00:00:00Z");
    expect(alertFromEvent("alert.firing", JSON.stringify({ kind: "alert.firing", body }))).toEqual(body);
    expect(alertFromEvent("machine.state", JSON.stringify({ body }))).toBeNull();
    expect(alertFromEvent("alert.firing", JSON.stringify({ body: { id: "x" } }))).toBeNull();
    expect(alertFromEvent("alert.firing", JSON.stringify({}))).toBeNull();
  });
});

describe("thresholdRule", () => {
  it("reads the form into the API's body", () => {
    expect(thresholdRule(FORM)).toEqual({
      name: "hot",
      enabled: true,
      condition: {
        kind: "tag_threshold",
        agent: null,
        device: "press-1",
        tag: "temperature",
        direction: "above",
        threshold: 80,
        clear_threshold: null,
        hold_seconds: 0,
      },
    });
    const full = thresholdRule({ ...FORM, agent: "a1", direction: "below", clear_threshold: "85", hold_seconds: "2.5" });
    expect(full.condition).toMatchObject({ agent: "a1", direction: "below", clear_threshold: 85, hold_seconds: 2.5 });
  });
  it("names the field that is wrong", () => {
    expect(() => thresholdRule({ ...FORM, name: " " })).toThrow("name: needed");
    expect(() => thresholdRule({ ...FORM, device: "" })).toThrow("device: needed");
    expect(() => thresholdRule({ ...FORM, tag: "" })).toThrow("tag: needed");
    expect(() => thresholdRule({ ...FORM, direction: "sideways" })).toThrow("direction");
    expect(() => thresholdRule({ ...FORM, threshold: "" })).toThrow("threshold: needed");
    expect(() => thresholdRule({ ...FORM, threshold: "hot" })).toThrow('threshold: "hot" is not a number');
    expect(() => thresholdRule({ ...FORM, clear_threshold: "x" })).toThrow("clear threshold");
    expect(() => thresholdRule({ ...FORM, hold_seconds: "-1" })).toThrow("hold: not below 0");
  });
});

describe("commandValue", () => {
  it("reads the text as the chosen type", () => {
    expect(commandValue(" 7000 ", "number")).toBe(7000);
    expect(commandValue("1.5e3", "number")).toBe(1500);
    expect(commandValue("true", "boolean")).toBe(true);
    expect(commandValue("false", "boolean")).toBe(false);
    expect(commandValue(" fast ", "text")).toBe(" fast ");
  });
  it("refuses what is not of the type", () => {
    expect(() => commandValue("", "number")).toThrow("not a number");
    expect(() => commandValue("fast", "number")).toThrow("not a number");
    expect(() => commandValue("yes", "boolean")).toThrow("true or false");
  });
});

describe("outcome", () => {
  it("says how a command ended, in words", () => {
    const applied = outcome(command("applied", { value_before: 12000, value_after: 7000 }));
    expect(applied.word).toBe("Applied");
    expect(applied.detail).toBe("sim-modbus/speed_setpoint was 12000, now reads 7000.");
    expect(outcome(command("applied")).detail).toContain("was unknown, now reads unknown");
    expect(outcome(command("refused", { reason: "not allowed" })).detail).toBe("The agent refused: not allowed");
    expect(outcome(command("refused")).detail).toBe("The agent refused: no reason given");
    expect(outcome(command("expired", { reason: "late" })).word).toBe("Expired");
    expect(outcome(command("unreachable", { reason: "timeout" })).detail).toContain("did not answer: timeout");
    expect(outcome(command("timed_out")).word).toBe("Timed out");
    expect(outcome(command("pending")).word).toBe("Pending");
    expect(outcome(command("sent")).detail).toBe("Waiting for the agent's answer.");
    expect(outcome(command("new", { reason: "?" }))).toMatchObject({ word: "new", tone: "tone-unknown" });
  });
  it("is open while pending or sent", () => {
    expect(isOpen("pending")).toBe(true);
    expect(isOpen("sent")).toBe(true);
    expect(isOpen("applied")).toBe(false);
  });
});
