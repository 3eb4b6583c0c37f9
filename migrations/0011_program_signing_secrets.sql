-- Per-program signing secrets that can be rotated (issue 12, item 18).
--
-- A program's signing secret (conversions and events signatures, webhook signatures) is
-- HMAC-SHA256(server key, "conversions:" + signing_seed). Until now the seed was the slug, so a
-- secret could never change. New programs get a random seed; rotation replaces it and keeps the
-- previous one accepted (for incoming signatures only) until previous_signing_until.
--
-- Existing programs keep the slug as their seed: their secret stays exactly what merchants use
-- today, and a rotation replaces it. The database holds seeds, never secrets: a copy of it
-- alone signs nothing without the server's REFGUARD_SECRET_KEY.
ALTER TABLE programs
    ADD COLUMN signing_seed text,
    ADD COLUMN previous_signing_seed text,
    ADD COLUMN previous_signing_until timestamptz;
UPDATE programs SET signing_seed = slug;
ALTER TABLE programs
    -- 64 hex digits from two v4 UUIDs (gen_random_uuid uses the server's strong random source);
    -- the API passes its own secrets.token_hex(32), this covers rows inserted by hand.
    ALTER COLUMN signing_seed SET DEFAULT
        replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
    ALTER COLUMN signing_seed SET NOT NULL,
    ADD CONSTRAINT programs_signing_seed_length CHECK (length(signing_seed) BETWEEN 1 AND 128),
    ADD CONSTRAINT programs_previous_signing_pair
        CHECK ((previous_signing_seed IS NULL) = (previous_signing_until IS NULL));

-- Links validated before hosts were normalised as browsers do (UTS #46 non-transitional, issue
-- 12 item 3): Python's IDNA 2003 codec read `ß`, `ς` and the zero-width joiners as `ss`, `σ` and
-- nothing, so `http://claßic.com/` passed for the domain classic.com while browsers go to
-- xn--claic-nqa.com. Such links are disabled (with an audit row each): they never led where
-- their check said. The program's owner can re-point them (PATCH /api/v1/links/{code}).
WITH hit AS (
    UPDATE links SET enabled = false, updated_at = now()
    WHERE enabled
      AND substring(destination FROM '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)')
          ~ '[\u00df\u03c2\u200c\u200d]'  -- ß, final sigma, ZWNJ, ZWJ
    RETURNING program_id, code, destination
)
INSERT INTO audit_log (program_id, actor, action, object_type, object_id, reason, details)
SELECT program_id, 'migration:0011', 'link.disable', 'link', code,
       'its destination host reads differently in browsers (UTS #46) than when it was checked',
       jsonb_build_object('destination', destination)
FROM hit;
