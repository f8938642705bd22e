-- The equipment model (docs/equipment.md). A site's document (areas, lines, calendar, loss
-- mapping) and a machine's are stored as validated JSON; what later derivations join on is
-- kept in columns of its own. Only new tables: the previous release runs unchanged.
CREATE TABLE equipment_sites (
    site        text PRIMARY KEY,
    spec        jsonb NOT NULL,
    time_zone   text NOT NULL,
    managed_by  text NOT NULL CHECK (managed_by IN ('config', 'api')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);

CREATE TABLE equipment_machines (
    site        text NOT NULL REFERENCES equipment_sites (site),
    machine     text NOT NULL,
    area        text NOT NULL,
    line        text NOT NULL,
    spec        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    PRIMARY KEY (site, machine)
);
CREATE INDEX equipment_machines_line ON equipment_machines (site, area, line);

-- Which tag plays which part for which machine: a batch's tags find their machines here.
CREATE TABLE equipment_tags (
    site      text NOT NULL,
    machine   text NOT NULL,
    role      text NOT NULL CHECK (role IN ('state', 'reason', 'good', 'scrap', 'product')),
    agent_id  text NOT NULL,
    device    text NOT NULL,
    name      text NOT NULL,
    PRIMARY KEY (site, machine, role),
    FOREIGN KEY (site, machine) REFERENCES equipment_machines (site, machine) ON DELETE CASCADE
);
CREATE INDEX equipment_tags_tag ON equipment_tags (agent_id, device, name);

-- Every change to the model: who (an API key, or the config file), when, before and after.
CREATE TABLE equipment_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    actor_name  text,
    action      text NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    site        text NOT NULL,
    machine     text,
    before      jsonb,
    after       jsonb
);
