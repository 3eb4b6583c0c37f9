-- Data retention and erasure. Clicks and conversions older than the retention age keep their
-- IP only as its network (/24, /48) and their user agent only as its parsed family; `reduced`
-- marks the rows already done.

ALTER TABLE clicks ADD COLUMN reduced boolean NOT NULL DEFAULT false;
ALTER TABLE conversions ADD COLUMN reduced boolean NOT NULL DEFAULT false;
CREATE INDEX conversions_unreduced ON conversions (program_id, occurred_at) WHERE NOT reduced;
