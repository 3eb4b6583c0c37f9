-- Signed webhooks (reward.approved, reward.paid) to the program's `webhook_url`: written in the
-- same transaction as the change they announce, delivered by a job with retries.

CREATE TABLE webhook_outbox (
    program_id      bigint NOT NULL REFERENCES programs (id),
    id              bigint GENERATED ALWAYS AS IDENTITY,
    event           text NOT NULL CHECK (event IN ('reward.approved', 'reward.paid')),
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,  -- gave up after the last retry
    last_error      text,
    PRIMARY KEY (program_id, id)
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
