-- Refunds and chargebacks stored without an original_event_id (DESIGN's contract has none: "a
-- refund names the customer of the purchase it reverses") reversed nothing: every reader
-- (rewards' reversal, the reports, fraud's money signals) joins on that column. Since this
-- version tracker.intake.queries.resolve_original fills it in when such a refund is stored; this
-- links the ones stored before, by the same rule, in the order they were stored (by id, so each
-- sees what the earlier ones took): the customer's latest purchase, renewal or trial with an
-- amount (never a signup, never a reversal) at or before the refund, preferring one with at
-- least the refund's amount left after the reversals naming it (any money left, for a refund
-- without an amount), then one with any money left, then the latest.
-- Two differences, since a stored row cannot be refused: a purchase in another currency is
-- never chosen (the live path would have refused the refund; here it stays unlinked), and a
-- refund for more than is left is linked all the same (the customer did get their money back;
-- the reports never net a purchase below zero).
-- conversions is no append-only table (only the ledger and the audit log are: 0001, 0006), so
-- the link is an UPDATE of that column. The next `refguard rewards release` reverses the
-- rewards of the linked purchases, with a clawback entry for paid money, as for explicit ones.
DO $$
DECLARE
    r      record;
    chosen text;
BEGIN
    FOR r IN SELECT program_id, id, customer_id, occurred_at, amount, currency
             FROM conversions
             WHERE type IN ('refund', 'chargeback') AND original_event_id IS NULL
             ORDER BY program_id, id
    LOOP
        SELECT c.event_id INTO chosen
        FROM conversions c
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(x.amount), 0) AS taken, bool_or(x.amount IS NULL) AS whole,
                   count(*) AS n
            FROM conversions x
            WHERE x.program_id = c.program_id AND x.original_event_id = c.event_id
              AND x.type IN ('refund', 'chargeback')) x
        CROSS JOIN LATERAL (
            SELECT CASE WHEN c.amount IS NULL THEN x.n = 0
                        ELSE NOT coalesce(x.whole, false) AND c.amount - x.taken > 0
                   END AS open) o
        WHERE c.program_id = r.program_id AND c.customer_id = r.customer_id
          AND c.occurred_at <= r.occurred_at
          AND (c.type IN ('purchase', 'renewal') OR (c.type = 'trial' AND c.amount > 0))
          AND (r.currency IS NULL OR c.currency IS NULL OR c.currency = r.currency)
        ORDER BY (o.open AND (r.amount IS NULL OR c.amount IS NULL
                              OR c.amount - x.taken >= r.amount)) DESC,
                 o.open DESC, c.occurred_at DESC, c.id DESC
        LIMIT 1;
        IF chosen IS NOT NULL THEN
            UPDATE conversions SET original_event_id = chosen
            WHERE program_id = r.program_id AND id = r.id;
        END IF;
    END LOOP;
END
$$;
