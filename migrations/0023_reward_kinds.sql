-- Rewards people can receive (issue 14): a rule gives `cash` (paid out in payout batches, as
-- before), `credit` (store credit the merchant applies: never in a payout batch) or `coupon`
-- (a code from a pool the merchant uploads, handed out once, when the reward is approved).
--
-- `pool` names a coupon reward's pool (NULL for the other kinds). A code belongs to at most one
-- reward and a reward has at most one code: the unique index on reward_id, so an approval that
-- runs twice (an overturned rejection approved again) can never take a second code.
ALTER TABLE rewards
    ADD COLUMN kind text NOT NULL DEFAULT 'cash' CHECK (kind IN ('cash', 'credit', 'coupon')),
    ADD COLUMN pool text CHECK ((kind = 'coupon') = (pool IS NOT NULL));

CREATE TABLE coupon_codes (
    id          bigserial PRIMARY KEY,
    program_id  bigint NOT NULL REFERENCES programs (id),
    pool        text NOT NULL CHECK (pool ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    code        text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
    reward_id   bigint REFERENCES rewards (id),
    assigned_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((reward_id IS NULL) = (assigned_at IS NULL)),
    UNIQUE (program_id, pool, code)
);
CREATE UNIQUE INDEX coupon_codes_reward ON coupon_codes (reward_id) WHERE reward_id IS NOT NULL;
-- The free codes of a pool, oldest first: what an approval draws from.
CREATE INDEX coupon_codes_free ON coupon_codes (program_id, pool, id) WHERE reward_id IS NULL;
