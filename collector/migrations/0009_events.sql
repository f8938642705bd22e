-- The collector's live event stream (docs/stream.md): what happened (an agent went offline, ...),
-- in the order the collectors appended it. Only additions: the previous release ignores it.

-- Ids come from this sequence, taken under an advisory lock held to commit (collector/events.py),
-- so events become visible in id order across collectors: a reader that has seen id N never
-- later finds a smaller one, and resumes with `id > N`.
CREATE SEQUENCE events_id_seq AS bigint;

CREATE TABLE events (
    id      bigint PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text NOT NULL,
    role    text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    subject text NOT NULL,
    body    jsonb NOT NULL
);
ALTER SEQUENCE events_id_seq OWNED BY events.id;

-- Retention finds the oldest event to keep by time.
CREATE INDEX events_at ON events (at);
