-- refguard initial schema: programs, referrers, links, clicks (partitioned), tokens, audit log.
-- Every table that belongs to a program carries program_id and leads its keys with it, so the
-- schema can be distributed by program_id (Citus) later.

CREATE TABLE programs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    destination_domains text[] NOT NULL,
    settings            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE referrers (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 128),
    email_hash  bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, id),
    UNIQUE (program_id, external_id)
);

CREATE TABLE links (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    referrer_id bigint NOT NULL,
    -- Codes are global (the redirect has only the code); under Citus links is a reference table.
    code        text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9_-]{1,64}$'),
    destination text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, id),
    FOREIGN KEY (program_id, referrer_id) REFERENCES referrers (program_id, id)
);
CREATE INDEX links_referrer ON links (program_id, referrer_id);

-- Workers keep every link in memory and refresh it from these notifications.
CREATE FUNCTION refguard_notify_link() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('refguard_links', 'link:' || OLD.code);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('refguard_links', 'link:' || NEW.code);
    RETURN NEW;
END $$;
CREATE TRIGGER links_notify AFTER INSERT OR UPDATE OR DELETE ON links
    FOR EACH ROW EXECUTE FUNCTION refguard_notify_link();

CREATE FUNCTION refguard_notify_program() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('refguard_links', 'program:' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER programs_notify AFTER UPDATE ON programs
    FOR EACH ROW EXECUTE FUNCTION refguard_notify_program();

-- The visit log. Range-partitioned by ts; partitions are created ahead by a job and on demand by
-- the flusher (imports may carry old timestamps). The key includes ts because a partitioned
-- table's unique keys must contain the partition key; a click's ts never changes (replays carry
-- it from the journal), so (ts, click_id) is as unique as click_id alone.
CREATE TABLE clicks (
    program_id      bigint NOT NULL,
    click_id        uuid NOT NULL,
    ts              timestamptz NOT NULL,
    link_id         bigint NOT NULL,
    referrer_id     bigint NOT NULL,
    code            text NOT NULL,
    visitor_id      text,
    new_visitor     boolean NOT NULL DEFAULT false,
    ip              inet,
    user_agent      text,
    accept_language text,
    referer         text,
    query           text,
    client_hints    jsonb,
    fingerprint     bytea,
    is_bot          boolean NOT NULL DEFAULT false,
    bot_rule        text,
    is_duplicate    boolean NOT NULL DEFAULT false,
    country         text,
    region          text,
    city            text,
    asn             bigint,
    as_org          text,
    is_anonymous    boolean NOT NULL DEFAULT false,
    is_hosting      boolean NOT NULL DEFAULT false,
    ua_browser      text,
    ua_os           text,
    ua_device       text,
    is_mobile       boolean,
    source          text NOT NULL DEFAULT 'live',
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- Also the visit log's order (program, ts, click_id), so it needs no index of its own.
    PRIMARY KEY (program_id, ts, click_id)
) PARTITION BY RANGE (ts);
CREATE INDEX clicks_referrer_ts ON clicks (program_id, referrer_id, ts);
CREATE INDEX clicks_link_visitor ON clicks (link_id, visitor_id, ts);
CREATE INDEX clicks_link_fingerprint ON clicks (link_id, fingerprint, ts);

-- Creates the monthly partition holding `at` if it does not exist (idempotent, concurrency-safe).
CREATE FUNCTION refguard_ensure_click_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start_ts timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    end_ts   timestamptz := start_ts + interval '1 month';
    name     text := 'clicks_' || to_char(start_ts AT TIME ZONE 'UTC', 'YYYY"m"MM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('refguard_click_partitions'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
                           name, start_ts, end_ts);
        END IF;
    END IF;
    RETURN name;
END $$;

SELECT refguard_ensure_click_partition(now() + make_interval(months => m))
FROM generate_series(-1, 2) AS m;

CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role         text NOT NULL CHECK (role IN ('admin', 'integration', 'finance', 'viewer')),
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Append-only: actor, time, action, reason. UPDATE and DELETE are refused by a trigger.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id  bigint,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    reason      text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id);

CREATE FUNCTION refguard_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refguard_append_only();
