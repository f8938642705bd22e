// What the alerts and commands pages show, as pure functions (tested): the look of an alert's
// state, keeping a list of alerts current from stream events, reading the rule form, and the
// words for how a command ended.

export interface AlertItem {
  id: number;
  rule_id: string;
  kind: string;
  subject: string;
  state: "pending" | "firing" | "resolved";
  started_at: string;
  fired_at: string | null;
  resolved_at: string | null;
  resolved_reason: string | null;
  value: number | null;
  late: boolean;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
  ack_comment: string | null;
  recorded_at: string;
  updated_at: string;
}

export interface AlertLook {
  shape: string;
  word: string;
  tone: string;
}

const ALERT_LOOKS: Record<AlertItem["state"], AlertLook> = {
  firing: { shape: "▲", word: "Firing", tone: "tone-stop" },
  pending: { shape: "◇", word: "Pending", tone: "tone-setup" },
  resolved: { shape: "✓", word: "Resolved", tone: "tone-run" },
};

/** An alert state's shape, word and colour class: never the colour alone. */
export function alertLook(state: string): AlertLook {
  return ALERT_LOOKS[state as AlertItem["state"]] ?? { shape: "?", word: state, tone: "tone-unknown" };
}

/** Pending or firing: still to be dealt with. */
export function isActive(alert: AlertItem): boolean {
  return alert.state === "pending" || alert.state === "firing";
}

/** Latest start first, then the higher id (the API's order). */
export function byStart(a: AlertItem, b: AlertItem): number {
  const diff = Date.parse(b.started_at) - Date.parse(a.started_at);
  return diff !== 0 ? diff : b.id - a.id;
}

/** The alerts with `changed` put in (replacing the one of its id unless that one is newer),
 * in the API's order. A change that arrives after a newer reading of the same alert (a
 * replayed event after a reload) is ignored. */
export function upsert(alerts: AlertItem[], changed: AlertItem): AlertItem[] {
  const old = alerts.find((a) => a.id === changed.id);
  if (old !== undefined && Date.parse(old.updated_at) > Date.parse(changed.updated_at)) return alerts;
  return [...alerts.filter((a) => a.id !== changed.id), changed].sort(byStart);
}

/** The alert an `alert.*` event's data carries; null for anything else. */
export function alertFromEvent(kind: string, data: string): AlertItem | null {
  if (!kind.startsWith("alert.")) return null;
  const parsed = JSON.parse(data) as { body?: AlertItem };
  const body = parsed.body;
  return body !== undefined && typeof body.id === "number" ? body : null;
}

export interface ThresholdForm {
  name: string;
  agent: string;
  device: string;
  tag: string;
  direction: string;
  threshold: string;
  clear_threshold: string;
  hold_seconds: string;
}

export interface NewThresholdRule {
  name: string;
  enabled: boolean;
  condition: {
    kind: "tag_threshold";
    agent: string | null;
    device: string;
    tag: string;
    direction: "above" | "below";
    threshold: number;
    clear_threshold: number | null;
    hold_seconds: number;
  };
}

/** A number from a field's text; null when the field is empty. */
function number(text: string, what: string): number | null {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const value = Number(trimmed);
  if (!Number.isFinite(value)) throw new Error(`${what}: "${trimmed}" is not a number`);
  return value;
}

/** The body of POST /api/v1/alert-rules from the form's fields; an Error naming the field
 * that is wrong. Limits the API checks itself (hysteresis side, lengths) are left to it. */
export function thresholdRule(form: ThresholdForm): NewThresholdRule {
  const name = form.name.trim();
  const device = form.device.trim();
  const tag = form.tag.trim();
  if (name === "") throw new Error("name: needed");
  if (device === "") throw new Error("device: needed");
  if (tag === "") throw new Error("tag: needed");
  if (form.direction !== "above" && form.direction !== "below") {
    throw new Error("direction: above or below");
  }
  const threshold = number(form.threshold, "threshold");
  if (threshold === null) throw new Error("threshold: needed");
  const hold = number(form.hold_seconds, "hold") ?? 0;
  if (hold < 0) throw new Error("hold: not below 0 seconds");
  return {
    name,
    enabled: true,
    condition: {
      kind: "tag_threshold",
      agent: form.agent.trim() === "" ? null : form.agent.trim(),
      device,
      tag,
      direction: form.direction,
      threshold,
      clear_threshold: number(form.clear_threshold, "clear threshold"),
      hold_seconds: hold,
    },
  };
}

export type CommandValue = number | boolean | string;

/** A command's value from the form: its text read as the chosen type. */
export function commandValue(text: string, type: string): CommandValue {
  const trimmed = text.trim();
  if (type === "number") {
    const value = Number(trimmed);
    if (trimmed === "" || !Number.isFinite(value)) throw new Error(`value: "${trimmed}" is not a number`);
    return value;
  }
  if (type === "boolean") {
    if (trimmed === "true") return true;
    if (trimmed === "false") return false;
    throw new Error("value: true or false");
  }
  return text;
}

export interface CommandItem {
  id: string;
  agent: string;
  device: string;
  tag: string;
  value: CommandValue;
  status: string;
  reason: string | null;
  value_before: CommandValue | null;
  value_after: CommandValue | null;
  requested_by: string;
  requested_by_name?: string;
  requested_at?: string;
  expires_at?: string;
  sent_at?: string | null;
  finished_at?: string | null;
}

/** Still waiting for the agent's answer. */
export function isOpen(status: string): boolean {
  return status === "pending" || status === "sent";
}

export interface Outcome {
  shape: string;
  word: string;
  tone: string;
  /** What happened, in a sentence. */
  detail: string;
}

function shown(value: CommandValue | null): string {
  return value === null ? "unknown" : JSON.stringify(value);
}

/** How a command ended (or that it has not yet), in words. */
export function outcome(command: CommandItem): Outcome {
  const reason = command.reason ?? "no reason given";
  switch (command.status) {
    case "applied":
      return {
        shape: "✓",
        word: "Applied",
        tone: "tone-run",
        detail: `${command.device}/${command.tag} was ${shown(command.value_before)}, now reads ${shown(command.value_after)}.`,
      };
    case "refused":
      return { shape: "✕", word: "Refused", tone: "tone-stop", detail: `The agent refused: ${reason}` };
    case "expired":
      return { shape: "⌛", word: "Expired", tone: "tone-stop", detail: `It reached the agent too late: ${reason}` };
    case "unreachable":
      return { shape: "✕", word: "Unreachable", tone: "tone-stop", detail: `The device did not answer: ${reason}` };
    case "timed_out":
      return { shape: "⌛", word: "Timed out", tone: "tone-stop", detail: "No answer from the agent before it expired." };
    case "pending":
      return { shape: "…", word: "Pending", tone: "tone-setup", detail: "The broker has not taken it yet; it is sent again until it expires." };
    case "sent":
      return { shape: "…", word: "Sent", tone: "tone-setup", detail: "Waiting for the agent's answer." };
    default:
      return { shape: "?", word: command.status, tone: "tone-unknown", detail: reason };
  }
}
