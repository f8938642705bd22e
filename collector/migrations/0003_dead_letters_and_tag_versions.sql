-- Dead letters you can act on, readings refused one by one, and tags that keep their type.

-- What a dead letter is: a whole message (a batch, or a status message) that could not be
-- ingested, or a batch whose other readings were stored (partial) and whose refused readings
-- are listed in dead_readings. The raw payload is kept once either way.
ALTER TABLE dead_letters
    ADD COLUMN agent_id     text,
    ADD COLUMN kind         text NOT NULL DEFAULT 'batch',
    ADD COLUMN reason       text NOT NULL DEFAULT 'unknown',
    ADD COLUMN epoch        bigint,
    ADD COLUMN batch_id     bigint,
    ADD COLUMN readings     integer NOT NULL DEFAULT 0,
    ADD COLUMN partial      boolean NOT NULL DEFAULT false,
    ADD COLUMN replayed_at  timestamptz,
    ADD COLUMN replay_error text;
-- One dead letter per batch, however often the agent sends it (a different payload under the
-- same batch id is not the same batch: it is kept too).
CREATE UNIQUE INDEX dead_letters_batch ON dead_letters (agent_id, epoch, batch_id, md5(payload))
    WHERE batch_id IS NOT NULL;
CREATE INDEX dead_letters_received ON dead_letters (received_at, id);
CREATE INDEX dead_letters_agent ON dead_letters (agent_id, received_at, id);

CREATE TABLE dead_readings (
    dead_letter_id  bigint NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    idx             integer NOT NULL,   -- position of the reading in its batch
    seq             bigint NOT NULL,
    reason          text NOT NULL,
    error           text NOT NULL,
    PRIMARY KEY (dead_letter_id, idx)
);

-- A tag whose data type changes starts a new row, so every stored reading is read back with
-- the type it was written with.
ALTER TABLE tags DROP CONSTRAINT tags_agent_id_device_name_key;
ALTER TABLE tags ADD CONSTRAINT tags_agent_id_device_name_type_key
    UNIQUE (agent_id, device, name, data_type);
