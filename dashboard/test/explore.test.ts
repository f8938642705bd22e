import { describe, expect, it } from "vitest";
import { BUCKETS_PER_PIXEL, csv, csvField, panned, plan, RAW_MOST_S, seriesQuery, visibleRows, zoomed } from "../src/explore";

const YEAR = 365 * 86400;
const T = 1_764_000_000; // a whole day (UTC) since the epoch

describe("plan", () => {
  it("asks for raw readings, as many as pixels, over a short range", () => {
    expect(plan(T + 0.4, T + 3600.2, 1179.6, "max")).toEqual({ from: T, to: T + 3601, maxPoints: 1180, interval: null, agg: null });
    expect(plan(T, T + RAW_MOST_S, 800, "max").interval).toBeNull();
  });
  it("buckets a long range in whole steps, at most BUCKETS_PER_PIXEL per pixel", () => {
    const p = plan(T - YEAR + 17, T - 5, 1200, "max");
    expect(p.interval).toBe("PT6H");
    expect(p.agg).toBe("max");
    expect(p.from % 21600).toBe(0);
    expect(p.to % 21600).toBe(0);
    expect(p.from).toBeLessThanOrEqual(T - YEAR + 17);
    expect(p.to).toBeGreaterThanOrEqual(T - 5);
    const month = plan(T - 30 * 86400, T, 1200, "min");
    expect(month.interval).toBe("PT15M");
    expect((month.to - month.from) / 900).toBeLessThanOrEqual(1200 * BUCKETS_PER_PIXEL);
    expect(plan(T - 7 * 3600, T, 1200, "avg").interval).toBe("PT1M");
  });
  it("takes the longest step when even that gives more buckets, and never fewer than 5 points", () => {
    expect(plan(T - 10 * YEAR, T, 10, "max")).toMatchObject({ interval: "PT6H", maxPoints: 10 });
    expect(plan(T, T + 60, 2, "max").maxPoints).toBe(5);
    expect(plan(T, T, 100, "max").to).toBe(T + 1);
  });
});

describe("seriesQuery", () => {
  it("names the tag, its agent and the plan in the API's terms", () => {
    expect(seriesQuery({ from: T, to: T + 60, maxPoints: 640, interval: "PT1M", agg: "max" }, "press/t", "a1")).toEqual({
      tag: "press/t",
      agent: "a1",
      from: new Date(T * 1000).toISOString(),
      to: new Date((T + 60) * 1000).toISOString(),
      max_points: 640,
      interval: "PT1M",
      agg: "max",
    });
  });
});

describe("zoom and pan", () => {
  it("zooms about the middle", () => {
    expect(zoomed(100, 200, 0.5)).toEqual([125, 175]);
    expect(zoomed(100, 200, 2)).toEqual([50, 250]);
  });
  it("pans by a share of the range, never past the latest moment", () => {
    expect(panned(100, 200, -0.5, 1000)).toEqual([50, 150]);
    expect(panned(100, 200, 0.5, 1000)).toEqual([150, 250]);
    expect(panned(100, 200, 0.5, 220)).toEqual([120, 220]);
  });
});

describe("CSV", () => {
  it("quotes fields with commas, quotes and line breaks, doubling quotes (RFC 4180)", () => {
    expect(csvField('a "b", c')).toBe('"a ""b"", c"');
    expect(csvField("two\r\nlines")).toBe('"two\r\nlines"');
    expect(csvField("plain")).toBe("plain");
    expect(csvField(null)).toBe("");
  });
  it("defuses text a spreadsheet would run as a formula, but not numbers", () => {
    expect(csvField("=HYPERLINK(\"x\")")).toBe("\"'=HYPERLINK(\"\"x\"\")\"");
    for (const lead of ["+", "-", "@", "\t", "\r"]) expect(csvField(`${lead}1`).replace(/^"/, "")).toMatch(/^'/);
    expect(csvField(-12.5)).toBe("-12.5");
    expect(csvField(Number.NaN)).toBe("");
  });
  it("ends every line with CRLF", () => {
    expect(csv([["a", 1], [null, "b,c"]])).toBe('a,1\r\n,"b,c"\r\n');
  });
  it("keeps the visible rows only, with UTC times and blanks for gaps", () => {
    const data = [
      [T, T + 1, T + 2, T + 3],
      [1, null, 3, 4],
      [10, 20, undefined, 40],
    ];
    expect(visibleRows(["a", "=b"], data, T + 1, T + 2)).toEqual([
      ["time (UTC)", "a", "=b"],
      [new Date((T + 1) * 1000).toISOString(), null, 20],
      [new Date((T + 2) * 1000).toISOString(), 3, null],
    ]);
    expect(visibleRows(["a"], [], 0, 1)).toEqual([["time (UTC)", "a"]]);
  });
});
