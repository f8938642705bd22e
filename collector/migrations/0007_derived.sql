-- What is derived from readings once and stored (docs/analytics.md): per-tag rollups, and per
-- machine its state intervals and counter increments. Every write logs the tags and the time
-- span it touched in the same transaction, so the deriver redoes exactly what a write (late
-- data included) changed. Only new tables: the previous release runs unchanged.

-- One row per write transaction: the tag versions it stored readings of, and their span.
CREATE TABLE derive_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag_ids    int4[] NOT NULL,
    lo         timestamptz NOT NULL,   -- the earliest reading's time
    hi         timestamptz NOT NULL,   -- the latest reading's time (included)
    logged_at  timestamptz NOT NULL DEFAULT now()
);

-- Machines whose derivation goes on from `lo` in a later pass: one pass derives at most a day
-- of a machine's readings, and a machine whose model changed is derived anew from its first.
CREATE TABLE derive_machines (
    site     text NOT NULL,
    machine  text NOT NULL,
    lo       timestamptz NOT NULL,
    PRIMARY KEY (site, machine),
    FOREIGN KEY (site, machine) REFERENCES equipment_machines (site, machine) ON DELETE CASCADE
);

-- Mergeable summaries of a numeric tag version's readings per minute and per hour: the same
-- fields a series bucket is computed from (collector/analytics/series.py, Summary).
CREATE TABLE rollups_1m (
    tag_id       int4 NOT NULL,
    bucket       timestamptz NOT NULL,
    count        int4 NOT NULL,          -- readings
    good         int4 NOT NULL,          -- of good quality
    numbers      int4 NOT NULL,          -- with a value
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
    PRIMARY KEY (tag_id, bucket)
);
CREATE TABLE rollups_1h (LIKE rollups_1m INCLUDING ALL);

-- A machine's state over time: one row per span of unchanged state, reason and product
-- codes; `end_ts` is null for the span still going on. Time before the first state reading
-- has no row (unknown).
CREATE TABLE machine_intervals (
    site      text NOT NULL,
    machine   text NOT NULL,
    start_ts  timestamptz NOT NULL,
    end_ts    timestamptz,
    state     jsonb NOT NULL,
    reason    jsonb,
    product   text,
    PRIMARY KEY (site, machine, start_ts),
    FOREIGN KEY (site, machine) REFERENCES equipment_machines (site, machine) ON DELETE CASCADE
);

-- A machine's counted units per minute and product ('' when it has no product tag).
CREATE TABLE machine_counts (
    site     text NOT NULL,
    machine  text NOT NULL,
    minute   timestamptz NOT NULL,
    product  text NOT NULL,
    good     float8 NOT NULL,
    scrap    float8 NOT NULL,
    PRIMARY KEY (site, machine, minute, product),
    FOREIGN KEY (site, machine) REFERENCES equipment_machines (site, machine) ON DELETE CASCADE
);

-- Downtime reasons set by an operator after the fact, for the stop starting at `start_ts`;
-- every change is kept, the newest applies.
CREATE TABLE downtime_reclassifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site        text NOT NULL,
    machine     text NOT NULL,
    start_ts    timestamptz NOT NULL,
    reason      jsonb NOT NULL,
    note        text,
    actor       text NOT NULL,
    actor_name  text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX downtime_reclassifications_stop ON downtime_reclassifications (site, machine, start_ts, id);

-- Readings stored before this release are derived too: one logged write per tag version and
-- day it has readings in, so the deriver takes the history up a day at a time.
INSERT INTO derive_log (tag_ids, lo, hi)
SELECT ARRAY[t.tag_id], greatest(d.day, r.lo), least(d.day + interval '1 day' - interval '1 microsecond', r.hi)
FROM tags t
CROSS JOIN LATERAL (SELECT min(ts) AS lo, max(ts) AS hi FROM readings WHERE tag_id = t.tag_id) r
CROSS JOIN LATERAL generate_series(date_trunc('day', r.lo, 'UTC'), r.hi, interval '1 day') AS d (day)
WHERE r.lo IS NOT NULL;
