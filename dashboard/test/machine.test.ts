import { describe, expect, it } from "vitest";
import { sameCode } from "../src/machine";

describe("sameCode", () => {
  it("matches codes of the same type and value only", () => {
    expect(sameCode(5, 5)).toBe(true);
    expect(sameCode("5", 5)).toBe(false);
    expect(sameCode(true, true)).toBe(true);
    expect(sameCode(null, 5)).toBe(false);
    expect(sameCode(5, null)).toBe(false);
  });
});
