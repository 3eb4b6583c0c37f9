-- The flusher's duplicate check looks for a click of the same fingerprint on the link within the
-- hour only among clicks without a visitor id (tracker.clicks.queries.STORED_DUPLICATES_SQL): an
-- index of just those answers it at once, where clicks_link_fingerprint had to walk every click of
-- every visitor sharing the fingerprint (quadratic in a hot fingerprint: a phone model behind a
-- carrier NAT, a bot rotating cookies).
CREATE INDEX clicks_link_fingerprint_anonymous ON clicks (link_id, fingerprint, ts)
    WHERE coalesce(visitor_id, '') = '';
