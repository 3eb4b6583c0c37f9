-- Conversions reported by the merchant, identity links, touchpoints and attribution credits.

CREATE TABLE conversions (
    program_id        bigint NOT NULL REFERENCES programs (id),
    id                bigint GENERATED ALWAYS AS IDENTITY,
    event_id          text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    type              text NOT NULL CHECK (type IN ('signup', 'trial', 'purchase', 'renewal',
                                                    'refund', 'chargeback')),
    customer_id       text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    email_hash        bytea,
    amount            bigint CHECK (amount >= 0),
    currency          text CHECK (currency ~ '^[A-Z]{3}$'),
    occurred_at       timestamptz NOT NULL,
    click_id          uuid,
    visitor_id        text CHECK (length(visitor_id) <= 64),
    referral_code     text,
    original_event_id text,
    ip                inet,
    user_agent        text,
    -- sha256 of the canonical body: a repeat with another body is a conflict, not a replay.
    body_hash         bytea NOT NULL,
    source            text NOT NULL DEFAULT 'api',
    received_at       timestamptz NOT NULL DEFAULT now(),
    attributed_at     timestamptz,
    PRIMARY KEY (program_id, id),
    UNIQUE (program_id, event_id)
);
CREATE INDEX conversions_customer ON conversions (program_id, customer_id, occurred_at);
CREATE INDEX conversions_unattributed ON conversions (program_id, id) WHERE attributed_at IS NULL;

-- Which visitors (rg_vid cookies) belong to which customer: from click ids and visitor ids
-- reported with conversions. A customer's later conversions reach their earlier visits.
CREATE TABLE customer_visitors (
    program_id  bigint NOT NULL,
    customer_id text NOT NULL,
    visitor_id  text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, customer_id, visitor_id)
);
CREATE INDEX customer_visitors_visitor ON customer_visitors (program_id, visitor_id);

-- The touches that led to a conversion, in order (evidence, and the input of every model).
CREATE TABLE touchpoints (
    program_id    bigint NOT NULL,
    conversion_id bigint NOT NULL,
    position      integer NOT NULL,
    referrer_id   bigint NOT NULL,
    click_id      uuid,
    ts            timestamptz NOT NULL,
    via           text NOT NULL CHECK (via IN ('click', 'visitor', 'customer', 'code')),
    PRIMARY KEY (program_id, conversion_id, position)
);

-- Credits of each conversion under the program's model at attribution time (sum to 1).
CREATE TABLE credits (
    program_id    bigint NOT NULL,
    conversion_id bigint NOT NULL,
    referrer_id   bigint NOT NULL,
    model         text NOT NULL,
    credit        double precision NOT NULL CHECK (credit >= 0 AND credit <= 1),
    PRIMARY KEY (program_id, conversion_id, referrer_id)
);
CREATE INDEX credits_referrer ON credits (program_id, referrer_id);

-- The visitor index serves attribution (all clicks of a visitor in a program) and the
-- duplicate check alike.
DROP INDEX clicks_link_visitor;
CREATE INDEX clicks_program_visitor ON clicks (program_id, visitor_id, ts);
