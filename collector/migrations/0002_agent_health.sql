-- What each agent last said about itself: birth/death and heartbeats.

ALTER TABLE agents
    ADD COLUMN status          text NOT NULL DEFAULT 'unknown',
    ADD COLUMN status_since    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN version         text,
    ADD COLUMN config_hash     text,
    ADD COLUMN devices         jsonb,
    ADD COLUMN epoch           bigint,
    ADD COLUMN last_heartbeat  jsonb,
    ADD COLUMN last_heartbeat_at timestamptz;
