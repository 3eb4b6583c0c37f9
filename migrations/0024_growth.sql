-- The growth side (issue 15, DESIGN section 1): customers' moments (events), referral
-- candidates, asks at the moment of delight, shares and the channels they go out on.

-- A link may be tagged with the channel it is shared on (email, sms, whatsapp, x, ...) and a
-- campaign: the funnel and the breakdowns read a click's channel from its link.
ALTER TABLE links
    ADD COLUMN channel  text CHECK (channel IS NULL OR channel ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    ADD COLUMN campaign text CHECK (campaign IS NULL OR length(campaign) BETWEEN 1 AND 128);
-- One link per (referrer, channel) made by the share page; links made through the API may repeat.
CREATE INDEX links_referrer_channel ON links (program_id, referrer_id, channel);

-- A customer's moment, as the merchant reports it (POST /api/v1/events, refguard import
-- --events): idempotent on (program, event_id) like conversions. `type` is the merchant's word
-- (nps, review, milestone, support_resolved, ...); `score` where the type has one.
CREATE TABLE customer_events (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    type        text NOT NULL CHECK (type ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    occurred_at timestamptz NOT NULL,
    score       double precision CHECK (score IS NULL OR score = score),  -- no NaN
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- sha256 of the canonical body: a repeat with another body is a conflict, not a replay.
    body_hash   bytea NOT NULL,
    source      text NOT NULL DEFAULT 'api',
    received_at timestamptz NOT NULL DEFAULT now(),
    asked_at    timestamptz,  -- when the asks job took it up (NULL: not yet)
    PRIMARY KEY (program_id, id),
    UNIQUE (program_id, event_id)
);
CREATE INDEX customer_events_customer ON customer_events (program_id, customer_id, occurred_at);
CREATE INDEX customer_events_unasked ON customer_events (program_id, id) WHERE asked_at IS NULL;
-- Purchases the asks job has taken up (a repeat purchase is a moment too).
ALTER TABLE conversions ADD COLUMN asked_at timestamptz;
CREATE INDEX conversions_unasked ON conversions (program_id, id)
    WHERE asked_at IS NULL AND type = 'purchase';

-- The referral-candidate model of a program, as last fitted by the candidates job, and its
-- score per customer (the latest fit only: a refit replaces them).
CREATE TABLE candidate_models (
    program_id   bigint PRIMARY KEY REFERENCES programs (id),
    kind         text NOT NULL,            -- 'model' or 'heuristic'
    trained_on   integer NOT NULL,         -- customers with a known outcome it learnt from
    auc_holdout  double precision,         -- NULL for the heuristic
    as_of        timestamptz NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE TABLE candidate_scores (
    program_id  bigint NOT NULL REFERENCES programs (id),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    score       double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    percentile  double precision NOT NULL CHECK (percentile >= 0 AND percentile <= 1),
    reasons     jsonb NOT NULL DEFAULT '[]'::jsonb,
    as_of       timestamptz NOT NULL,
    PRIMARY KEY (program_id, customer_id)
);
CREATE INDEX candidate_scores_rank ON candidate_scores (program_id, score DESC);

-- An ask: a customer asked to refer at a moment of delight, handed to the merchant's messaging
-- as the signed webhook referral.ask. One ask per trigger (an event or a purchase). `status` is
-- the ask's own life (queued -> sent, or expired; suppressed with `reason`); shared, clicked and
-- converted are read from the shares, clicks and conversions that followed it.
CREATE TABLE asks (
    program_id     bigint NOT NULL REFERENCES programs (id),
    id             bigint GENERATED ALWAYS AS IDENTITY,
    customer_id    text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    referrer_id    bigint,                 -- the customer as a referrer (made when asked)
    trigger_source text NOT NULL CHECK (trigger_source IN ('event', 'conversion')),
    trigger_id     bigint NOT NULL,        -- customer_events.id or conversions.id
    trigger_type   text NOT NULL,
    trigger_score  double precision,
    occurred_at    timestamptz NOT NULL,   -- of the trigger
    deadline       timestamptz NOT NULL,   -- occurred_at + within_hours
    status         text NOT NULL CHECK (status IN ('queued', 'sent', 'expired', 'suppressed')),
    reason         text,                   -- why suppressed or expired
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    PRIMARY KEY (program_id, id),
    UNIQUE (program_id, trigger_source, trigger_id),
    FOREIGN KEY (program_id, referrer_id) REFERENCES referrers (program_id, id)
);
CREATE INDEX asks_customer ON asks (program_id, customer_id, created_at);
CREATE INDEX asks_status ON asks (program_id, status, created_at);

-- A share: a referrer sent their link out on a channel, from the share page or reported by
-- the merchant (POST /api/v1/shares), possibly in answer to an ask.
CREATE TABLE shares (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    referrer_id bigint NOT NULL,
    channel     text NOT NULL CHECK (channel ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    ask_id      bigint,
    occurred_at timestamptz NOT NULL,
    source      text NOT NULL CHECK (source IN ('page', 'api')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, id),
    FOREIGN KEY (program_id, referrer_id) REFERENCES referrers (program_id, id),
    FOREIGN KEY (program_id, ask_id) REFERENCES asks (program_id, id)
);
CREATE INDEX shares_referrer ON shares (program_id, referrer_id, occurred_at);
CREATE INDEX shares_ask ON shares (program_id, ask_id) WHERE ask_id IS NOT NULL;

ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_event_check;
ALTER TABLE webhook_outbox ADD CONSTRAINT webhook_outbox_event_check
    CHECK (event IN ('referral.converted', 'reward.created', 'reward.flagged',
                     'reward.approved', 'reward.rejected', 'reward.reversed', 'reward.paid',
                     'payout.created', 'referral.ask'));
