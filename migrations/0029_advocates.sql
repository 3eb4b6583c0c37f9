-- Advocates (issue 16): a referrer is a `customer` advocate (has purchases of their own) or a
-- `non_buyer` (a content sharer, an affiliate, an employee). Derived from the data (a purchase
-- or renewal under the referrer's external id, the same id space as customer ids) unless the
-- merchant sets it here; NULL: derived (tracker.programs.queries.referrer_kind).
ALTER TABLE referrers ADD COLUMN kind text CHECK (kind IS NULL OR kind IN ('customer', 'non_buyer'));

-- What the reports job computed last (tracker.scoring.economics.refresh_report_cache): the
-- default views of the economics and breakdown reports over a program's whole history, served
-- while fresh instead of a scan of every click; `params` is the view's canonical query.
CREATE TABLE report_cache (
    program_id  bigint NOT NULL REFERENCES programs (id),
    report      text NOT NULL,
    params      text NOT NULL,
    body        jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, report, params)
);
