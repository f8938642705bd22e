// The dashboard's shell: sign-in, the header (who, live indicator, sign out) and the page.

import { Api, ApiError } from "./api";
import { h, replace } from "./dom";
import { clock } from "./format";
import { AdminPage } from "./admin";
import { AlertsPage } from "./alerts";
import { CommandsPage } from "./commands";
import { ExplorerPage } from "./explorer";
import { MachinePage } from "./machine";
import { route } from "./route";
import { Overview } from "./overview";
import { allows, forgetKey, isRole, type Role, storedKey, storeKey } from "./session";
import { type SseEvent, StreamClient, type StreamStatus } from "./sse";
import type { Me } from "./types";

const STREAM_URL =
  "/api/v1/stream?kinds=machine.state,agent.status,alert.pending,alert.firing,alert.resolved,alert.acknowledged,command.result";

/** What a page of the dashboard does; the shell keeps one at a time. */
interface Page {
  start(): Promise<void>;
  stop(): void;
  reload(): Promise<void>;
  onEvent(event: SseEvent): void;
  zone(): string;
}

const TITLES: Record<ReturnType<typeof route>["kind"], string> = {
  overview: "Plant overview: Plantwire",
  machine: "Machine: Plantwire",
  alerts: "Alerts: Plantwire",
  commands: "Commands: Plantwire",
  explorer: "Tag explorer: Plantwire",
  admin: "Admin: Plantwire",
};

interface Signed {
  stream: StreamClient;
  stopPage: () => void;
}



let current: Signed | null = null;
let onHashChange: () => void = () => undefined;
const app = document.getElementById("app") as HTMLElement;

function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.detail || error.title;
  return error instanceof Error ? error.message : String(error);
}

function signOut(message = ""): void {
  current?.stream.stop();
  current?.stopPage();
  window.removeEventListener("hashchange", onHashChange);
  current = null;
  forgetKey();
  showSignIn(message);
}

function showSignIn(message: string): void {
  document.title = "Sign in: Plantwire";
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "signin-help",
  });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-heading" },
    h("h1", { id: "signin-heading" }, "Plantwire dashboard"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p",
      { id: "signin-help", class: "muted" },
      "The key stays in this browser tab only, and is forgotten when you sign out or close the tab.",
    ),
    button,
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    button.disabled = true;
    signIn(key)
      .catch((failure: unknown) => {
        replace(
          error,
          failure instanceof ApiError && failure.status === 401
            ? "That key is unknown, revoked or expired."
            : `Cannot sign in: ${errorText(failure)}`,
        );
      })
      .finally(() => {
        button.disabled = false;
      });
  });
  replace(app, h("main", { id: "main" }, form));
  input.focus();
}

async function signIn(key: string): Promise<void> {
  // The key is kept only once the collector knows it.
  const me = await new Api(() => key, () => undefined).get<Me>("/api/v1/me");
  if (!isRole(me.role)) throw new Error(`unknown role ${me.role}`);
  storeKey(key);
  const api = new Api(storedKey, () => signOut("Your key was refused: sign in again."));
  showShell(api, me, me.role);
}

function showShell(api: Api, me: Me, role: Role): void {
  document.title = "Plant overview: Plantwire";
  const nav = h("a", { href: "#/", "aria-current": "page" }, "Overview");
  const alertsLink = h("a", { href: "#/alerts" }, "Alerts");
  const commandsLink = allows(role, "operator") ? h("a", { href: "#/commands" }, "Commands") : null;
  const explorerLink = h("a", { href: "#/explorer" }, "Tag explorer");
  // Admin pages are listed for admin keys only.
  const adminLink = role === "admin" ? h("a", { href: "#/admin" }, "Admin") : null;
  const live = h("p", { id: "live", role: "status", "data-status": "connecting" }, "Connecting…");
  const problems = h("div", { id: "problems", role: "alert" });
  const signOutButton = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOutButton.addEventListener("click", () => signOut("Signed out."));
  const main = h("main", { id: "main", tabindex: -1 });
  replace(
    app,
    h("a", { class: "skip", href: "#main" }, "Skip to content"),
    h(
      "header",
      { class: "top" },
      h("p", { class: "brand" }, "Plantwire"),
      h("nav", { "aria-label": "Pages" }, nav, " ", alertsLink, " ", commandsLink, " ", explorerLink, " ", adminLink),
      live,
      h("p", { class: "who" }, "Signed in as ", h("strong", {}, me.name), ` (${role})`),
      signOutButton,
    ),
    problems,
    main,
  );
  const onError = (error: unknown): void => {
    replace(problems, h("p", { class: "error" }, `Could not load: ${errorText(error)}`));
  };
  let page: Page | null = null;
  const open = (): void => {
    page?.stop();
    replace(problems);
    const where = route(location.hash);
    // Each page draws into an element of its own: a page left while still loading then draws
    // into a detached one, not over the next page.
    const view = h("div", { class: "view" });
    replace(main, view);
    page =
      where.kind === "machine"
        ? new MachinePage(api, view, where.site, where.machine, onError, role)
        : where.kind === "alerts"
          ? new AlertsPage(api, view, role, onError)
          : where.kind === "commands"
            ? new CommandsPage(api, view, role, onError)
            : where.kind === "explorer"
              ? new ExplorerPage(api, view, onError)
              : where.kind === "admin"
                ? new AdminPage(api, view, where.section, me, onError)
                : new Overview(api, view, onError);
    document.title = TITLES[where.kind];
    nav.setAttribute("aria-current", where.kind === "overview" ? "page" : "false");
    alertsLink.setAttribute("aria-current", where.kind === "alerts" ? "page" : "false");
    commandsLink?.setAttribute("aria-current", where.kind === "commands" ? "page" : "false");
    explorerLink.setAttribute("aria-current", where.kind === "explorer" ? "page" : "false");
    adminLink?.setAttribute("aria-current", where.kind === "admin" ? "page" : "false");
    page.start().catch(onError);
  };
  const zone = (): string => page?.zone() ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
  let staleSince: number | null = null;
  const showStatus = (status: StreamStatus): void => {
    live.setAttribute("data-status", status);
    if (status === "live") {
      const wasStale = staleSince !== null;
      staleSince = null;
      document.body.removeAttribute("data-stale");
      replace(live, h("span", { class: "shape", "aria-hidden": "true" }, "●"), " Live");
      // What changed while away is replayed by the stream, but heartbeats and KPIs are not:
      // read everything again.
      if (wasStale) page?.reload().then(() => replace(problems), onError);
    } else if (status === "reconnecting") {
      staleSince ??= Date.now();
      document.body.setAttribute("data-stale", "true");
      replace(
        live,
        h("span", { class: "shape", "aria-hidden": "true" }, "⚠"),
        ` Reconnecting: data is stale since ${clock(new Date(staleSince).toISOString(), zone())}`,
      );
    } else if (status === "connecting") {
      replace(live, "Connecting…");
    }
  };
  const stream = new StreamClient({
    url: STREAM_URL,
    key: storedKey,
    onEvent: (event) => {
      if (event.event === "reset") page?.reload().catch(onError);
      else page?.onEvent(event);
    },
    onStatus: showStatus,
    onRefused: () => signOut("Your key was refused: sign in again."),
  });
  current = { stream, stopPage: () => page?.stop() };
  onHashChange = open;
  window.addEventListener("hashchange", onHashChange);
  open();
  void stream.run();
}

const key = storedKey();
if (key === null) showSignIn("");
else {
  signIn(key).catch((failure: unknown) => {
    // A refused key is forgotten; a collector out of reach is not the key's fault.
    if (failure instanceof ApiError && failure.status === 401) signOut("Sign in again.");
    else showSignIn(`Cannot reach the collector: ${errorText(failure)}. Sign in to try again.`);
  });
}
