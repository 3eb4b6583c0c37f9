-- Programs with settings.fingerprint = "browser" answer /r/{code} with a small page that sends
-- client signals (timezone, screen, languages, navigator.webdriver, a canvas hash) before it
-- navigates on. The signals arrive on their own; a job folds them into the click.

ALTER TABLE clicks
    ADD COLUMN awaiting_signals boolean NOT NULL DEFAULT false,
    ADD COLUMN browser_signals jsonb;
CREATE INDEX clicks_awaiting_signals ON clicks (ts) WHERE awaiting_signals;

CREATE TABLE click_signals (
    program_id  bigint NOT NULL,
    click_id    uuid NOT NULL,
    -- The click's millisecond, read from its UUIDv7: enough to find its partition and row.
    click_ms    timestamptz NOT NULL,
    signals     jsonb NOT NULL,
    webdriver   boolean NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (program_id, click_id)
);
