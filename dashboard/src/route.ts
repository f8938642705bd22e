// Which page a location's hash names. The hash only: the key never goes into a URL.

export type Route =
  | { kind: "overview" }
  | { kind: "machine"; site: string; machine: string }
  | { kind: "explorer" }
  | { kind: "admin"; section: AdminSection }
  | { kind: "alerts" }
  | { kind: "commands" };

export type AdminSection = "agents" | "dead-letters" | "keys";
const ADMIN_SECTIONS: AdminSection[] = ["agents", "dead-letters", "keys"];

/** #/machine/<site>/<machine> is a machine's page; #/alerts, #/commands and #/explorer those
 * pages; #/admin/<section> an admin page (agents when none); anything else the overview. */
export function route(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/");
  if (parts[0] === "explorer" && parts.length === 1) return { kind: "explorer" };
  if (parts[0] === "admin" && parts.length <= 2) {
    const section = (parts[1] || "agents") as AdminSection;
    if (ADMIN_SECTIONS.includes(section)) return { kind: "admin", section };
  }
  if (parts[0] === "machine" && parts.length === 3 && parts[1] && parts[2]) {
    try {
      return { kind: "machine", site: decodeURIComponent(parts[1]), machine: decodeURIComponent(parts[2]) };
    } catch {
      return { kind: "overview" }; // a malformed escape
    }
  }
  if (parts.length === 1 && (parts[0] === "alerts" || parts[0] === "commands")) return { kind: parts[0] };
  return { kind: "overview" };
}

/** The hash of a machine's page. */
export function machineHash(site: string, machine: string): string {
  return `#/machine/${encodeURIComponent(site)}/${encodeURIComponent(machine)}`;
}
