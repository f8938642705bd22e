// The shapes of the API answers the dashboard reads (see /api/openapi.json).

export type Code = string | number | boolean;

export interface Me {
  prefix: string;
  name: string;
  role: string;
}

export interface LineNode {
  id: string;
  name: string | null;
  machines: string[];
}
export interface AreaNode {
  id: string;
  name: string | null;
  lines: LineNode[];
}
export interface SiteNode {
  id: string;
  name: string | null;
  time_zone: string;
  areas: AreaNode[];
}
export interface EquipmentTree {
  enterprise: string;
  sites: SiteNode[];
}

export interface MachineNow {
  machine: string;
  name: string | null;
  state: Code | null;
  state_name: string | null;
  element: string | null;
  reason: Code | null;
  reason_name: string | null;
  product: string | null;
  since: string | null;
}
export interface MachineStates {
  site: string;
  time_zone: string;
  machines: MachineNow[];
}

export interface Kpis {
  availability: number | null;
  effectiveness: number | null;
  quality_ratio: number | null;
  oee: number | null;
}
export interface MachineKpis {
  machine: string;
  kpis: Kpis;
}
export interface KpiReport {
  from: string;
  to: string;
  total: { kpis: Kpis; machines: MachineKpis[] | null };
}

export interface BufferHealth {
  readings?: number;
  oldest_age_s?: number;
  dropped_oldest?: number;
  dropped_newest?: number;
}
export interface Agent {
  agent: string;
  status: string;
  status_since: string;
  last_seen: string;
  last_heartbeat: { buffer?: BufferHealth } | null;
  last_heartbeat_at: string | null;
}

/** The data: of a stream event (docs/stream.md). */
export interface StreamEvent<B> {
  id: number;
  at: string;
  kind: string;
  subject: string;
  body: B;
}
export interface MachineStateBody {
  site: string;
  machine: string;
  state: Code;
  reason: Code | null;
  product: string | null;
  since: string;
}
export interface AgentStatusBody {
  agent: string;
  status: string;
  since: string;
}

export interface Elements {
  pot_s: number;
  pdot_s: number;
  pbt_s: number;
  apt_s: number;
  asut_s: number;
  adet_s: number;
  adot_s: number;
  unknown_s: number;
  pq: number;
  gq: number;
  sq: number;
  ideal_s: number | null;
  fe: number;
}
export interface FullKpis extends Kpis {
  mtbf_s: number | null;
  mttr_s: number | null;
}
export interface MachineKpiReport {
  from: string;
  to: string;
  total: {
    kpis: FullKpis;
    working: { model: string; elements: Elements; warnings: { code: string; message: string }[] };
  };
}

export interface TimelineSpan {
  from: string;
  to: string;
  ongoing: boolean;
  state: Code;
  state_name: string | null;
  element: string | null;
  reason: Code | null;
  reason_name: string | null;
}
export interface Timeline {
  from: string;
  to: string;
  time_zone: string;
  spans: TimelineSpan[];
}

export interface ParetoBar {
  label: string;
  seconds: number;
  events: number;
  share: number;
}
export interface Stop {
  machine: string;
  start: string;
  end: string | null;
  ongoing: boolean;
  duration_s: number;
  state: Code;
  state_name: string | null;
  reason: Code | null;
  reason_name: string | null;
  element: string;
  reclassified: { reason: Code; by: string; by_name: string | null; at: string } | null;
}
export interface Downtime {
  by_reason: ParetoBar[];
  events: Stop[];
}
export interface KpiGroup {
  key: string;
  from: string;
  to: string;
  kpis: Kpis;
}
export interface GroupedKpiReport {
  time_zone: string;
  groups: KpiGroup[];
}
export interface SiteOut {
  id: string;
  spec: { time_zone: string; loss_mapping: { reasons: { value: Code; name: string; element: string }[] } };
}

export interface TagRef {
  tag: string;
  agent?: string | null;
}
export interface MachineOut {
  site: string;
  id: string;
  spec: {
    name: string | null;
    state: TagRef;
    reason?: TagRef | null;
    good: TagRef;
    scrap?: TagRef | null;
    product?: TagRef | null;
  };
}
export interface TagOut {
  tag: string;
  agent: string;
  device: string;
  name: string;
  data_type: string;
}
export interface SeriesPage {
  buckets?: { start: string; end: string; value: number | string | null; count: number }[] | null;
  readings: { ts: string; value: number | string | boolean | null }[] | null;
  downsampled: boolean;
  count: number;
}
