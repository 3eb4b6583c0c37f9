-- Clearance looks up a program's refunds and chargebacks on every run: an index of just those.
CREATE INDEX conversions_reversals ON conversions (program_id, original_event_id)
    WHERE type IN ('refund', 'chargeback');
