-- The index of every click by its link and fingerprint (0001) served one probe alone: a click
-- without a visitor id looking for any stored click of its fingerprint on its link within the
-- hour (tracker.clicks.queries.STORED_DUPLICATES_SQL). Only imports bring clicks without a
-- visitor id (the redirect gives every visit one), yet every click paid for the index: about a
-- quarter of the index upkeep of a live click's COPY. A month's partition now gets it when an
-- import first brings such a click within the hour of that month (refguard_index_fingerprints,
-- asked by tracker.clicks.flusher.Partitions before the probe), so the probe finds what it
-- found before, and months of live traffic alone never carry it.
DROP INDEX clicks_link_fingerprint;

-- Indexes the partitions holding the given times by (link_id, fingerprint, ts), where they exist
-- and are not indexed so yet; returns the times whose partitions exist (indexed now). CREATE INDEX
-- needs the owner, so it cannot be CONCURRENTLY: it holds off writes to that month while it builds
-- (a month being imported into, seldom the live one; the flusher's journal holds the live clicks
-- meanwhile, and redirects keep answering).
CREATE FUNCTION refguard_index_fingerprints(VARIADIC times timestamptz[]) RETURNS SETOF timestamptz
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    at   timestamptz;
    name text;
BEGIN
    -- (Two importers at once: one builds, the other then finds it built.)
    PERFORM pg_advisory_xact_lock(hashtext('refguard_click_fingerprints'));
    FOREACH at IN ARRAY times LOOP
        name := 'clicks_' || to_char(date_trunc('month', at AT TIME ZONE 'UTC'), 'YYYY"m"MM');
        IF to_regclass(name) IS NOT NULL THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (link_id, fingerprint, ts)',
                           name || '_link_fingerprint', name);
            RETURN NEXT at;
        END IF;
    END LOOP;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION refguard_index_fingerprints(timestamptz[]) '
                   'SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE ALL ON FUNCTION refguard_index_fingerprints(timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refguard_index_fingerprints(timestamptz[]) TO refguard_app;
