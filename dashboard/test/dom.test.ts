// @vitest-environment happy-dom
import { describe, expect, it } from "vitest";
import { h, replace } from "../src/dom";
import { allows, forgetKey, isRole, storedKey, storeKey } from "../src/session";
import { withQuery } from "../src/api";
import { lookOf } from "../src/states";

const HOSTILE = "<img src=x onerror=alert(1)>";

describe("h", () => {
  it("puts text in as text, never as markup", () => {
    const element = h("p", { title: HOSTILE }, HOSTILE, 3);
    expect(element.textContent).toBe(`${HOSTILE}3`);
    expect(element.querySelector("img")).toBeNull();
    expect(element.getAttribute("title")).toBe(HOSTILE);
    expect(element.innerHTML).toContain("&lt;img");
  });
  it("leaves out false and empty attributes and children", () => {
    const element = h("button", { disabled: false, hidden: true, "data-x": null }, null, false, undefined, "ok");
    expect(element.hasAttribute("disabled")).toBe(false);
    expect(element.getAttribute("hidden")).toBe("");
    expect(element.hasAttribute("data-x")).toBe(false);
    expect(element.textContent).toBe("ok");
  });
  it("refuses inline event handlers", () => {
    expect(() => h("a", { onclick: "alert(1)" })).toThrow(/no inline handlers/);
  });
  it("replaces children", () => {
    const list = h("ul", {}, h("li", {}, "a"));
    replace(list, h("li", {}, "b"), h("li", {}, HOSTILE));
    expect([...list.children].map((li) => li.textContent)).toEqual(["b", HOSTILE]);
  });
});

describe("session", () => {
  it("keeps the key in the storage it is given, and forgets it", () => {
    storeKey("pwk_abc", sessionStorage);
    expect(storedKey(sessionStorage)).toBe("pwk_abc");
    expect(localStorage.length).toBe(0);
    forgetKey(sessionStorage);
    expect(storedKey(sessionStorage)).toBeNull();
  });
  it("orders roles", () => {
    expect(allows("admin", "operator")).toBe(true);
    expect(allows("viewer", "operator")).toBe(false);
    expect(allows("operator", "operator")).toBe(true);
    expect(isRole("operator")).toBe(true);
    expect(isRole("root")).toBe(false);
  });
});

describe("withQuery and lookOf", () => {
  it("encodes parameters and leaves out empty ones", () => {
    expect(withQuery("/api/v1/kpis", { site: "a b&c", window: "current_shift", machine: null })).toBe(
      "/api/v1/kpis?site=a+b%26c&window=current_shift",
    );
    expect(withQuery("/x")).toBe("/x");
  });
  it("gives each state a shape and a word, not only a colour", () => {
    expect(lookOf("production")).toMatchObject({ shape: "▶", word: "Producing" });
    expect(lookOf("delay").word).toBe("Stopped");
    expect(lookOf(null).word).toBe("Unknown");
    expect(lookOf("something new").shape).toBe("?");
  });
});
