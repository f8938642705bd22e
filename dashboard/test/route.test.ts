import { describe, expect, it } from "vitest";
import { machineHash, route } from "../src/route";

describe("route", () => {
  it("names a machine's page, and round-trips odd ids", () => {
    expect(route("#/machine/plant-1/press-1")).toEqual({ kind: "machine", site: "plant-1", machine: "press-1" });
    expect(route(machineHash("site a/b", "m&1"))).toEqual({ kind: "machine", site: "site a/b", machine: "m&1" });
  });
  it("names the tag explorer", () => {
    expect(route("#/explorer")).toEqual({ kind: "explorer" });
    expect(route("#explorer")).toEqual({ kind: "explorer" });
    expect(route("#/explorer/x")).toEqual({ kind: "overview" });
  });
  it("names the admin pages, agents when no section is given", () => {
    expect(route("#/admin")).toEqual({ kind: "admin", section: "agents" });
    expect(route("#/admin/")).toEqual({ kind: "admin", section: "agents" });
    expect(route("#/admin/dead-letters")).toEqual({ kind: "admin", section: "dead-letters" });
    expect(route("#/admin/keys")).toEqual({ kind: "admin", section: "keys" });
    expect(route("#/admin/other")).toEqual({ kind: "overview" });
    expect(route("#/admin/keys/x")).toEqual({ kind: "overview" });
  });
  it("takes anything else for the overview", () => {
    for (const hash of ["", "#", "#/", "#/machine/only-site", "#/machine//m", "#/other/a/b", "#/machine/%E0%A4%A/x"]) {
      expect(route(hash)).toEqual({ kind: "overview" });
    }
  });
});

describe("the alerts and commands pages", () => {
  it("have routes of their own", () => {
    expect(route("#/alerts")).toEqual({ kind: "alerts" });
    expect(route("#/commands")).toEqual({ kind: "commands" });
    expect(route("#/alerts/1")).toEqual({ kind: "overview" });
  });
});
