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
