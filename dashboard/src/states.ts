// How a machine's state is shown: a shape and a word as well as a colour, so that state never
// depends on telling colours apart.

export interface StateLook {
  shape: string;
  word: string;
  /** The CSS class that colours it. */
  tone: string;
}

const LOOKS: Record<string, StateLook> = {
  production: { shape: "▶", word: "Producing", tone: "tone-run" },
  delay: { shape: "■", word: "Stopped", tone: "tone-stop" },
  setup: { shape: "◆", word: "Setup", tone: "tone-setup" },
  no_orders: { shape: "○", word: "No orders", tone: "tone-idle" },
  planned_downtime: { shape: "‖", word: "Planned downtime", tone: "tone-planned" },
};
const UNKNOWN: StateLook = { shape: "?", word: "Unknown", tone: "tone-unknown" };

/** The look of a time element (production, delay, ...); unknown when null or new. */
export function lookOf(element: string | null | undefined): StateLook {
  return (element !== null && element !== undefined && LOOKS[element]) || UNKNOWN;
}
