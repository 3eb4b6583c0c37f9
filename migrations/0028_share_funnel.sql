-- The funnel by trigger (tracker/asks/funnel.py) looks up, for every share, click and
-- conversion, the referrer's latest ask sent before it: without this index each look-up read
-- the program's asks.
CREATE INDEX asks_referrer_sent ON asks (program_id, referrer_id, sent_at)
    WHERE sent_at IS NOT NULL;
