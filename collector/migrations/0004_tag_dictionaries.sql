-- Tag dictionaries of version 3 batches, by the hash batches name them with. A batch sends its
-- agent's dictionary only now and then; any collector replica, and dead letter replay, finds it
-- here. Rows are never updated: a dictionary's bytes are what its hash says.
CREATE TABLE tag_dictionaries (
    agent_id    text NOT NULL,
    hash        text NOT NULL,
    tags        integer NOT NULL,
    dictionary  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, hash)
);
