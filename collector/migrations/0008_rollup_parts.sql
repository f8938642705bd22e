-- Rollups summarised by the collector that stored the readings (docs/analytics.md, "Storage"):
-- it keeps each written batch's readings in memory, summarises them per tag and minute once the
-- minute has ended, and writes those summaries as parts that the deriver merges into
-- rollups_1m. The deriver then reads raw readings again only when parts cannot be merged
-- exactly, or when a collector stopped before writing its parts. Only additions: the previous
-- release runs unchanged (its log rows keep the default, re-rolled from the readings).

-- Whether the deriver rolls this write up from the readings (false: a collector's parts will
-- bring its rollups, and a claim stands for them until they are written).
ALTER TABLE derive_log ADD COLUMN rollups boolean NOT NULL DEFAULT true;

-- A written batch whose rollup parts its collector still holds in memory. The collector
-- deletes the claim in the transaction that writes the parts; a claim left for longer than
-- the deriver allows (the collector stopped) is rolled up from the readings instead.
CREATE TABLE rollup_claims (
    agent_id   text NOT NULL,
    epoch      int8 NOT NULL,
    batch_id   int8 NOT NULL,
    tag_ids    int4[] NOT NULL,
    lo         timestamptz NOT NULL,
    hi         timestamptz NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, epoch, batch_id)
);
CREATE INDEX rollup_claims_logged ON rollup_claims (logged_at);

-- The readings' first and last times of every kind (span_lo, span_hi), beside the numbers'
-- first and last: two summaries of one minute merge exactly only when these do not overlap.
ALTER TABLE rollups_1m ADD COLUMN span_lo timestamptz, ADD COLUMN span_hi timestamptz;
ALTER TABLE rollups_1h ADD COLUMN span_lo timestamptz, ADD COLUMN span_hi timestamptz;

-- Summaries of some of a tag version's readings in one minute, waiting to be merged.
CREATE TABLE rollup_parts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag_id       int4 NOT NULL,
    bucket       timestamptz NOT NULL,
    count        int4 NOT NULL,
    good         int4 NOT NULL,
    numbers      int4 NOT NULL,
    first_ts     timestamptz,
    first_value  float8,
    last_ts      timestamptz,
    last_value   float8,
    total        float8,
    low          float8,
    low_ts       timestamptz,
    high         float8,
    high_ts      timestamptz,
    step_area    float8 NOT NULL,
    linear_area  float8 NOT NULL,
    increase     float8 NOT NULL,
    span_lo      timestamptz NOT NULL,
    span_hi      timestamptz NOT NULL
);
CREATE INDEX rollup_parts_tag ON rollup_parts (tag_id, bucket);
