import { describe, expect, it } from "vitest";
import { clock, code, count, duration, percent, secondsSince } from "../src/format";

describe("percent", () => {
  it("shows a ratio with one decimal", () => {
    expect(percent(0.8734)).toBe("87.3 %");
    expect(percent(1.2)).toBe("120.0 %");
    expect(percent(0)).toBe("0.0 %");
  });
  it("shows a dash for unknown", () => {
    expect(percent(null)).toBe("–");
    expect(percent(undefined)).toBe("–");
    expect(percent(Number.NaN)).toBe("–");
  });
});

describe("duration", () => {
  it("uses two units at most", () => {
    expect(duration(0)).toBe("0 s");
    expect(duration(45.9)).toBe("45 s");
    expect(duration(725)).toBe("12 min 05 s");
    expect(duration(3 * 3600 + 20 * 60 + 59)).toBe("3 h 20 min");
    expect(duration(2 * 86400 + 4 * 3600 + 1)).toBe("2 d 4 h");
  });
  it("never shows a negative time (clocks a little apart)", () => {
    expect(duration(-3)).toBe("0 s");
  });
  it("shows a dash for unknown", () => {
    expect(duration(null)).toBe("–");
    expect(duration(Number.POSITIVE_INFINITY)).toBe("–");
  });
});

describe("clock", () => {
  it("reads the site's wall clock, not the browser's", () => {
    const at = "2026-07-01T12:00:05Z";
    expect(clock(at, "Europe/Berlin")).toBe("14:00:05");
    expect(clock(at, "America/Chicago")).toBe("07:00:05");
    expect(clock(at, "Europe/Berlin", true)).toBe("2026-07-01 14:00:05");
  });
  it("follows daylight saving", () => {
    expect(clock("2026-01-15T12:00:00Z", "Europe/Berlin")).toBe("13:00:00");
  });
  it("shows a date change in the site's zone", () => {
    expect(clock("2026-03-01T23:30:00Z", "Asia/Tokyo", true)).toBe("2026-03-02 08:30:00");
  });
  it("shows midnight as 00, not 24", () => {
    expect(clock("2026-03-01T23:00:00Z", "Europe/Berlin")).toBe("00:00:00");
  });
  it("shows a dash for no time or a bad one", () => {
    expect(clock(null, "UTC")).toBe("–");
    expect(clock("yesterday-ish", "UTC")).toBe("–");
  });
});

describe("count, code and secondsSince", () => {
  it("formats counts", () => {
    expect(count(1234567.4)).toBe("1,234,567");
    expect(count(undefined)).toBe("–");
  });
  it("shows codes of every type", () => {
    expect(code(3)).toBe("3");
    expect(code(true)).toBe("true");
    expect(code("JAM")).toBe("JAM");
    expect(code(null)).toBe("–");
  });
  it("measures from a time", () => {
    expect(secondsSince("2026-01-01T00:00:00Z", Date.parse("2026-01-01T00:01:30Z"))).toBe(90);
  });
});
