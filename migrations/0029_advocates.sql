-- Advocates (issue 16): a referrer is a `customer` advocate (has purchases of their own) or a
-- `non_buyer` (a content sharer, an affiliate, an employee). Derived from the data (a purchase
-- or renewal under the referrer's external id, the same id space as customer ids) unless the
-- merchant sets it here; NULL: derived (tracker.programs.queries.REFERRER_KIND).
ALTER TABLE referrers ADD COLUMN kind text CHECK (kind IS NULL OR kind IN ('customer', 'non_buyer'));

-- The reports read a customer's paying conversions in time order (first payment, retention).
CREATE INDEX conversions_paid ON conversions (program_id, customer_id, occurred_at)
    WHERE type IN ('purchase', 'renewal');
