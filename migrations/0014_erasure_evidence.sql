-- Erasure keeps the evidence of fraud decisions still open (tracker.privacy.erase_customer).
--
-- `erasures`: who was erased, when, by whom, and when the erasure was completed: the keyed
-- e-mail hash and visitor links an open decision needs stay until every reward touching the
-- person is decided (tracker.privacy.finish_erasures), then go. Clearance never approves a
-- reward touching an erased person by itself: finance decides it (tracker.finance.clearance).
CREATE TABLE erasures (
    program_id   bigint NOT NULL REFERENCES programs (id),
    customer_id  text NOT NULL,  -- the merchant's opaque id (conversions and rewards keep it)
    erased_at    timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    completed_at timestamptz,  -- NULL: evidence kept for an open decision
    PRIMARY KEY (program_id, customer_id)
);
CREATE INDEX erasures_open ON erasures (program_id) WHERE completed_at IS NULL;

-- Erasing a person never lowers a stored risk (DESIGN section 7): the risk (and reasons) of
-- every conversion touching the person, as it stood when their data went, is a floor that no
-- later scan's score goes under, however the scan stores it (a trigger, so the floor holds
-- for every writer of conversion_risk, and the application's role cannot switch it off).
CREATE TABLE risk_floors (
    program_id    bigint NOT NULL,
    conversion_id bigint NOT NULL,
    score         double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    reasons       jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, conversion_id)
);

-- Under its floor, a risk takes the floor's score and reasons, followed by the scan's own
-- reasons whose codes the floor does not name.
CREATE FUNCTION refguard_risk_floor() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    floor_score   double precision;
    floor_reasons jsonb;
BEGIN
    SELECT f.score, f.reasons INTO floor_score, floor_reasons FROM risk_floors f
    WHERE f.program_id = NEW.program_id AND f.conversion_id = NEW.conversion_id;
    IF FOUND AND floor_score > NEW.score THEN
        NEW.score := floor_score;
        NEW.reasons := floor_reasons || coalesce((
            SELECT jsonb_agg(r ORDER BY n) FROM jsonb_array_elements(NEW.reasons)
                WITH ORDINALITY AS e(r, n)
            WHERE NOT floor_reasons @> jsonb_build_array(jsonb_build_object('code', r->'code'))),
            '[]'::jsonb);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER conversion_risk_floor BEFORE INSERT OR UPDATE ON conversion_risk
    FOR EACH ROW EXECUTE FUNCTION refguard_risk_floor();

-- The roles ('referee': the conversion's customer; 'referrer': a credited referrer) in which
-- erased people touch a conversion: what clearance and erasure name in a reward's
-- `erased_before_clearance` reason.
CREATE FUNCTION refguard_erased_roles(p_program bigint, p_conversion bigint) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT array_remove(ARRAY[
        CASE WHEN EXISTS (
            SELECT 1 FROM conversions c
            JOIN erasures e ON e.program_id = c.program_id AND e.customer_id = c.customer_id
            WHERE c.program_id = p_program AND c.id = p_conversion) THEN 'referee' END,
        CASE WHEN EXISTS (
            SELECT 1 FROM credits cr
            JOIN referrers f ON f.program_id = cr.program_id AND f.id = cr.referrer_id
            JOIN erasures e ON e.program_id = f.program_id AND e.customer_id = f.external_id
            WHERE cr.program_id = p_program AND cr.conversion_id = p_conversion)
            THEN 'referrer' END], NULL)
$$;
