-- How each tenant's event ids become Cronofy's (src/domain/event_ids.rs).
-- Cronofy keys an application's own events by calendar and event_id per
-- application, so tenants sharing one application need ids of their own.
-- prefix '' keeps callers' ids as they are (the first tenant of an
-- application, and every tenant that wrote events before this table); any
-- other prefix is put before each caller's id. A row is written once, when
-- calgate first starts with the tenant, and never changes: an event stays
-- reachable by the id it was written with.
CREATE TABLE event_namespaces (
    tenant_id  TEXT    PRIMARY KEY,
    prefix     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
-- Every tenant that may have written events so far wrote callers' ids.
INSERT INTO event_namespaces (tenant_id, prefix, created_at)
    SELECT tenant_id, '', CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) FROM grants GROUP BY tenant_id;
INSERT INTO event_namespaces (tenant_id, prefix, created_at)
    SELECT tenant_id, '', CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) FROM event_writes
    WHERE tenant_id NOT IN (SELECT tenant_id FROM event_namespaces) GROUP BY tenant_id;
