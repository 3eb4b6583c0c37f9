-- Ring flags name IP addresses among their members; past the retention age those are reduced
-- to their network like the clicks they came from. `reduced` marks the flags already done.
ALTER TABLE fraud_flags ADD COLUMN reduced boolean NOT NULL DEFAULT false;
CREATE INDEX fraud_flags_unreduced ON fraud_flags (created_at) WHERE NOT reduced;
