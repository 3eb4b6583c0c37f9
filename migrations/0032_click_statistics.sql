-- Planner statistics only for the columns of `clicks` that queries filter, join or group on.
-- The columns below are only ever read out (the visit log, evidence, the fraud facts) or
-- erased; ANALYZE computed their statistics on every sample row all the same: a fifth of an
-- ANALYZE of a click partition, which the flusher and importer run as a month fills
-- (tracker.clicks.flusher.Partitions), the importer over all of `clicks` at its end (PostgreSQL
-- 16 cannot analyze the parent alone), and autovacuum as partitions grow. A query that comes to
-- filter on one of them should set its statistics target back (SET STATISTICS -1).
ALTER TABLE clicks
    ALTER COLUMN new_visitor SET STATISTICS 0,
    ALTER COLUMN accept_language SET STATISTICS 0,
    ALTER COLUMN client_hints SET STATISTICS 0,
    ALTER COLUMN region SET STATISTICS 0,
    ALTER COLUMN city SET STATISTICS 0,
    ALTER COLUMN asn SET STATISTICS 0,
    ALTER COLUMN as_org SET STATISTICS 0,
    ALTER COLUMN is_anonymous SET STATISTICS 0,
    ALTER COLUMN is_hosting SET STATISTICS 0,
    ALTER COLUMN is_mobile SET STATISTICS 0,
    ALTER COLUMN browser_signals SET STATISTICS 0;

-- A partition created with PARTITION OF does not take the parent's statistics targets: the
-- function gives a new partition those set on `clicks` (as above), whatever they are.
CREATE OR REPLACE FUNCTION refguard_ensure_click_partition(at timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    start_ts timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    end_ts   timestamptz := start_ts + interval '1 month';
    name     text := 'clicks_' || to_char(start_ts AT TIME ZONE 'UTC', 'YYYY"m"MM');
    col      record;
BEGIN
    IF to_regclass(name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('refguard_click_partitions'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
                           name, start_ts, end_ts);
            FOR col IN SELECT attname, attstattarget FROM pg_attribute
                       WHERE attrelid = 'clicks'::regclass AND attnum > 0
                         AND NOT attisdropped AND attstattarget >= 0 LOOP
                EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET STATISTICS %s',
                               name, col.attname, col.attstattarget);
            END LOOP;
        END IF;
    END IF;
    RETURN name;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION refguard_ensure_click_partition(timestamptz) '
                   'SET search_path = %I, pg_temp', current_schema());
END $$;
