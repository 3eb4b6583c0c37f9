-- Fraud scans, their flags (with reasons, members and evidence) and each conversion's risk.

CREATE TABLE fraud_scans (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id  bigint NOT NULL REFERENCES programs (id),
    mode        text NOT NULL CHECK (mode IN ('full', 'incremental')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE fraud_flags (
    program_id  bigint NOT NULL REFERENCES programs (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    scan_id     bigint NOT NULL REFERENCES fraud_scans (id),
    kind        text NOT NULL,
    score       double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    -- The conversion a conversion-level flag is about (rings name their members instead).
    conversion_id bigint,
    reasons     jsonb NOT NULL,
    members     jsonb NOT NULL,
    evidence    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, id)
);
CREATE INDEX fraud_flags_kind ON fraud_flags (program_id, kind, id);

CREATE TABLE conversion_risk (
    program_id    bigint NOT NULL,
    conversion_id bigint NOT NULL,
    score         double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    reasons       jsonb NOT NULL,
    scan_id       bigint NOT NULL REFERENCES fraud_scans (id),
    scanned_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, conversion_id)
);
