-- Webhooks for the whole life of a referral (issue 14, DESIGN section 5): besides
-- reward.approved and reward.paid, the outbox carries referral.converted, reward.created,
-- reward.flagged, reward.rejected, reward.reversed and payout.created
-- (tracker.finance.webhooks.EVENTS).
ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_event_check;
ALTER TABLE webhook_outbox ADD CONSTRAINT webhook_outbox_event_check
    CHECK (event IN ('referral.converted', 'reward.created', 'reward.flagged',
                     'reward.approved', 'reward.rejected', 'reward.reversed', 'reward.paid',
                     'payout.created'));
