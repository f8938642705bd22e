// How numbers, durations and times read on the dashboard. Pure functions, tested.

const DASH = "–";

/** A ratio (0..1) as a percentage with one decimal; a dash when unknown. */
export function percent(ratio: number | null | undefined): string {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return DASH;
  return `${(ratio * 100).toFixed(1)} %`;
}

/** A count with thousands separated; a dash when unknown. */
export function count(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  return Math.round(value).toLocaleString("en-GB");
}

/** A length of time, two units at most: 45 s, 12 min 05 s, 3 h 20 min, 2 d 4 h. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes > 0) return `${minutes} min ${String(rest).padStart(2, "0")} s`;
  return `${rest} s`;
}

/** Seconds from an RFC 3339 time to `now` (milliseconds since the epoch). */
export function secondsSince(iso: string, now: number): number {
  return (now - Date.parse(iso)) / 1000;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string, withDate: boolean): Intl.DateTimeFormat {
  const key = `${timeZone}|${withDate}`;
  let found = formatters.get(key);
  if (found === undefined) {
    found = new Intl.DateTimeFormat("en-GB", {
      timeZone,
      hourCycle: "h23",
      ...(withDate ? { year: "numeric", month: "2-digit", day: "2-digit" } : {}),
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(key, found);
  }
  return found;
}

/** A moment as the site's wall clock reads it: "14:03:09", or "2026-11-27 14:03:09" when
 * `withDate`; a dash when unknown. */
export function clock(iso: string | null | undefined, timeZone: string, withDate = false): string {
  if (iso === null || iso === undefined) return DASH;
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return DASH;
  const parts = Object.fromEntries(
    formatter(timeZone, withDate)
      .formatToParts(at)
      .map((part) => [part.type, part.value]),
  );
  const time = `${parts.hour}:${parts.minute}:${parts.second}`;
  return withDate ? `${parts.year}-${parts.month}-${parts.day} ${time}` : time;
}

/** A state code or name as text: codes may be numbers, booleans or text. */
export function code(value: string | number | boolean | null | undefined): string {
  return value === null || value === undefined ? DASH : String(value);
}
