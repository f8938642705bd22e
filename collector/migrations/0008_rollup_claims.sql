-- Rollups summarised by the collector that stored the readings (docs/analytics.md, "Storage"):
-- it keeps each written batch's readings in memory, summarises them per tag and minute once the
-- minute has ended, and merges the summaries into rollups_1m and rollups_1h. Raw readings are
-- read again only where summaries cannot be merged exactly, or when a collector stopped before
-- rolling up what it held. Only additions: the previous release runs unchanged (its log rows
-- keep the default, rolled up from the readings by the deriver).

-- Whether the deriver rolls this write up from the readings (false: the collector that wrote it
-- rolls it up, and a claim stands for that until it has).
ALTER TABLE derive_log ADD COLUMN rollups boolean NOT NULL DEFAULT true;

-- A written batch whose readings its collector still holds in memory. The collector deletes the
-- claim in the transaction that merges their summaries; a claim left for longer than the
-- deriver allows (the collector stopped) is rolled up from the readings instead, for every
-- tag of its agent over its span (a claim is kept small: it is written with every batch).
CREATE TABLE rollup_claims (
    agent_id   text NOT NULL,
    epoch      int8 NOT NULL,
    batch_id   int8 NOT NULL,
    lo         timestamptz NOT NULL,
    hi         timestamptz NOT NULL,
    logged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, epoch, batch_id)
);
CREATE INDEX rollup_claims_logged ON rollup_claims (logged_at);
CREATE INDEX rollup_claims_agent ON rollup_claims (agent_id, lo);

-- The readings' first and last times of every kind (span_lo, span_hi), beside the numbers'
-- first and last: two summaries of one bucket merge exactly only when these do not overlap.
ALTER TABLE rollups_1m ADD COLUMN span_lo timestamptz, ADD COLUMN span_hi timestamptz;
ALTER TABLE rollups_1h ADD COLUMN span_lo timestamptz, ADD COLUMN span_hi timestamptz;
