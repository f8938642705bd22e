-- Commands to equipment (docs/protocol.md, Commands): each request, what its agent answered,
-- and who asked; the table is the audit. Only additions: the previous release ignores it.

CREATE TABLE commands (
    id                uuid PRIMARY KEY,
    -- Orders the audit (newest first) and makes its cursor.
    seq               bigserial NOT NULL,
    agent             text NOT NULL,
    device            text NOT NULL,
    tag               text NOT NULL,
    value             jsonb NOT NULL,
    requested_by      text NOT NULL,
    requested_by_name text NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'sent', 'applied', 'refused', 'expired',
                                        'unreachable', 'timed_out')),
    reason            text,
    value_before      jsonb,
    value_after       jsonb,
    sent_at           timestamptz,
    finished_at       timestamptz
);

CREATE UNIQUE INDEX commands_seq ON commands (seq);
-- Every collector looks for commands still open: to send again, or to time out.
CREATE INDEX commands_open ON commands (expires_at) WHERE status IN ('pending', 'sent');
CREATE INDEX commands_agent ON commands (agent, seq);
