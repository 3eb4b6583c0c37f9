-- Rewards, the money ledger, finance approvals, payout batches and review-page sessions.

-- One reward per (conversion, rule, beneficiary). A rejection is a status, never an absence.
CREATE TABLE rewards (
    program_id     bigint NOT NULL REFERENCES programs (id),
    id             bigint GENERATED ALWAYS AS IDENTITY,
    conversion_id  bigint NOT NULL,
    rule_index     integer NOT NULL,
    -- The credited referrer; for a referee reward, the referrer with the largest credit.
    referrer_id    bigint NOT NULL,
    beneficiary    text NOT NULL CHECK (beneficiary IN ('referrer', 'referee')),
    -- Who is paid: the referrer's external id, or the referee's customer id.
    payee          text NOT NULL,
    amount         bigint NOT NULL CHECK (amount >= 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    credit         double precision NOT NULL CHECK (credit >= 0 AND credit <= 1),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'flagged', 'approved', 'rejected', 'paid',
                                     'reversed')),
    risk_score     double precision,
    reasons        jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- Why the amount is what it is (rule, tier, cap), for finance.
    calculation    jsonb NOT NULL DEFAULT '{}'::jsonb,
    hold_until     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    flagged_at     timestamptz,
    decided_by     text,
    decided_at     timestamptz,
    decision_reason text,
    batch_id       uuid,
    paid_at        timestamptz,
    PRIMARY KEY (program_id, id),
    UNIQUE (program_id, conversion_id, rule_index, payee)
);
CREATE UNIQUE INDEX rewards_id ON rewards (id);
CREATE INDEX rewards_status ON rewards (program_id, status, id);
CREATE INDEX rewards_referrer ON rewards (program_id, referrer_id, created_at);
CREATE INDEX rewards_payee ON rewards (program_id, payee, currency) WHERE status = 'approved';

-- Conversions whose rewards have been created (with or without any matching rule).
ALTER TABLE conversions ADD COLUMN rewarded_at timestamptz;
CREATE INDEX conversions_unrewarded ON conversions (program_id, id)
    WHERE rewarded_at IS NULL AND attributed_at IS NOT NULL;

-- The money: what each payee earned, was clawed back and was paid. Balances are sums of
-- entries; nothing is ever edited (refused by trigger), a correction is a new entry.
CREATE TABLE ledger_entries (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    payee       text NOT NULL,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount      bigint NOT NULL,  -- positive: owed to the payee; negative: clawback, payout
    kind        text NOT NULL CHECK (kind IN ('earned', 'clawback', 'payout')),
    reward_id   bigint,
    batch_id    uuid,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, id),
    CHECK ((kind = 'earned') = (amount > 0) OR amount = 0)
);
CREATE INDEX ledger_payee ON ledger_entries (program_id, payee, currency);
CREATE UNIQUE INDEX ledger_earned_once ON ledger_entries (reward_id) WHERE kind = 'earned';
CREATE UNIQUE INDEX ledger_clawback_once ON ledger_entries (reward_id) WHERE kind = 'clawback';
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refguard_append_only();

-- Four-eyes approvals: above the program's limit, two different finance users must approve.
CREATE TABLE reward_approvals (
    program_id bigint NOT NULL,
    reward_id  bigint NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, reward_id, actor)
);

CREATE TABLE payout_batches (
    id          uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    lines       integer NOT NULL,
    totals      jsonb NOT NULL  -- {"USD": 12345, ...}
);

-- Review-page sessions: the cookie carries a random id; the database keeps its hash.
CREATE TABLE review_sessions (
    id_hash     bytea PRIMARY KEY,
    token_id    bigint NOT NULL REFERENCES api_tokens (id),
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
