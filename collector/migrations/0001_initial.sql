-- Agents, the tag dictionary, batch ledger, time-partitioned readings, dead letters.

CREATE TABLE agents (
    agent_id    text PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- One row per (agent, device, tag): keeps each reading row narrow.
CREATE TABLE tags (
    tag_id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    text NOT NULL REFERENCES agents (agent_id),
    device      text NOT NULL,
    name        text NOT NULL,
    data_type   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, device, name)
);
CREATE INDEX tags_device_name ON tags (device, name);

-- Every stored batch, so a batch sent again is recognised and not stored twice.
CREATE TABLE batches (
    agent_id     text NOT NULL,
    epoch        bigint NOT NULL,
    batch_id     bigint NOT NULL,
    last_seq     bigint NOT NULL,
    readings     integer NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, epoch, batch_id)
);

-- value holds numbers and booleans (0/1); value_text holds strings, and integers
-- beyond 2^53 that a double cannot hold exactly. tags.data_type says which applies.
CREATE TABLE readings (
    tag_id      integer NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision,
    value_text  text,
    quality     smallint NOT NULL,
    seq         bigint NOT NULL,
    server_ts   timestamptz          -- OPC UA server timestamp, when one was sent
) PARTITION BY RANGE (ts);

-- Catches readings outside the daily partitions created ahead of time.
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE INDEX readings_tag_ts ON readings (tag_id, ts);

CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    error        text NOT NULL
);
