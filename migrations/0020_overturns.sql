-- Overturns (issue 14): finance may approve a rejected reward and reject an approved one that
-- is not yet paid. A reward may then be decided more than once, so each completed decision
-- opens a new *round*: four-eyes approvals count within the reward's current round, and each
-- round writes at most one `earned` and at most one `reversal` ledger entry for the reward
-- (the unique indexes below keep "never earned twice" a database rule).

-- The round of the reward's next decision; `decided_person` is who made the last one (the
-- four-eyes identity: a person's several tokens are one), so a person's rejection is
-- overturned only by another person.
ALTER TABLE rewards ADD COLUMN round integer NOT NULL DEFAULT 0;
ALTER TABLE rewards ADD COLUMN decided_person text;

ALTER TABLE reward_approvals ADD COLUMN round integer NOT NULL DEFAULT 0;
ALTER TABLE reward_approvals DROP CONSTRAINT reward_approvals_pkey;
ALTER TABLE reward_approvals ADD PRIMARY KEY (program_id, reward_id, round, actor);
DROP INDEX reward_approvals_person;
CREATE UNIQUE INDEX reward_approvals_person
    ON reward_approvals (program_id, reward_id, round, (coalesce(person, actor)));

-- `reversal`: the negative entry that undoes an approval's earning when finance rejects the
-- approved reward before it is paid (a clawback stays the refund's and chargeback's).
ALTER TABLE ledger_entries ADD COLUMN round integer NOT NULL DEFAULT 0;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('earned', 'clawback', 'payout', 'reversal'));
DROP INDEX ledger_earned_once;
CREATE UNIQUE INDEX ledger_earned_once ON ledger_entries (reward_id, round) WHERE kind = 'earned';
CREATE UNIQUE INDEX ledger_reversal_once ON ledger_entries (reward_id, round)
    WHERE kind = 'reversal';

-- Payout batches over HTTP (GET /api/v1/payouts[/{batch_id}]): newest first, and a batch's
-- lines and rewards found by its id.
CREATE INDEX payout_batches_created ON payout_batches (created_at, id);
CREATE INDEX ledger_batch ON ledger_entries (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX rewards_batch ON rewards (batch_id) WHERE batch_id IS NOT NULL;
