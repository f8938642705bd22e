-- Alerts (docs/alerts.md): rules, the alerts they raise, where each rule's evaluation stands,
-- and a log of written readings for the evaluator. Only additions: the previous release
-- ignores them (and does not write alert_log).

-- One row per write of readings (per batch), like derive_log; the alert evaluator takes the
-- rows up and deletes them (derive_log is the deriver's).
CREATE TABLE alert_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag_ids   int4[] NOT NULL,
    lo        timestamptz NOT NULL,   -- the earliest reading's time
    hi        timestamptz NOT NULL,   -- the latest reading's time (included)
    logged_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alert_rules (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL,
    params      jsonb NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    -- Readings from this time on are evaluated (set anew when the condition changes).
    evaluated_from timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

-- Alerts outlive their rule (a deleted rule's alerts are resolved, not deleted): no foreign key.
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         text NOT NULL,
    kind            text NOT NULL,
    subject         text NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    started_at      timestamptz NOT NULL,
    fired_at        timestamptz,
    resolved_at     timestamptz,
    resolved_reason text,
    value           double precision,
    late            boolean NOT NULL DEFAULT false,
    acknowledged_at timestamptz,
    acknowledged_by text,
    ack_comment     text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The second guard after the evaluation lock: an episode is recorded once.
    UNIQUE (rule_id, subject, started_at)
);

CREATE INDEX alerts_listing ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_open ON alerts (rule_id, subject) WHERE state <> 'resolved';

-- Where a rule's evaluation of one subject stands, so another collector resumes it exactly.
CREATE TABLE alert_state (
    rule_id         text NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    evaluated_until timestamptz NOT NULL,
    phase           text NOT NULL CHECK (phase IN ('clear', 'pending', 'firing')),
    since           timestamptz,
    value           double precision,
    alert_id        bigint,
    PRIMARY KEY (rule_id, subject)
);

-- How far a rule that follows stream events (agent.status, machine.state) has read them.
CREATE TABLE alert_cursors (
    rule_id       text PRIMARY KEY REFERENCES alert_rules (id) ON DELETE CASCADE,
    last_event_id bigint NOT NULL
);
