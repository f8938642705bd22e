-- Webhooks (docs/webhooks.md): endpoints, the durable outbox of messages to them, every
-- delivery attempt, and how far the fan-out has read the events table. Only additions: the
-- previous release ignores them.

CREATE TABLE webhook_endpoints (
    id              text PRIMARY KEY,
    url             text NOT NULL,
    kinds           text[] NOT NULL DEFAULT '{}',
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- Events up to this id were appended before the endpoint existed: it gets none of them.
    after_event_id  bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL
);

CREATE TABLE webhook_messages (
    id              bigserial PRIMARY KEY,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL,
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A claim: the worker holding it delivers the message until then, no other does.
    leased_until    timestamptz,
    UNIQUE (endpoint_id, event_id)
);

-- The worker looks for each endpoint's oldest pending message.
CREATE INDEX webhook_messages_pending ON webhook_messages (endpoint_id, event_id)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    id          bigserial PRIMARY KEY,
    message_id  bigint NOT NULL REFERENCES webhook_messages (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    error       text,
    duration_ms integer NOT NULL
);

CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, id);

-- One row: the last event the fan-out turned into messages. Starts at the newest event, so
-- what happened before webhooks existed is not sent.
CREATE TABLE webhook_cursor (
    single        boolean PRIMARY KEY DEFAULT true CHECK (single),
    last_event_id bigint NOT NULL
);

INSERT INTO webhook_cursor (last_event_id) SELECT coalesce(max(id), 0) FROM events;
