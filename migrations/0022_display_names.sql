-- Display names of people (issue 14): what the merchant calls a referrer or a customer, for
-- the people who read rewards. Personal data: erasure removes both (tracker.privacy).
--
-- A referrer's name lives on its row (one row per person already). A customer's is the latest
-- one a conversion carried (`customer_name`), one row per customer: a column on conversions
-- would copy the name into every event of the person and make "the latest" a scan of them;
-- here a look-up is by key and erasure is one DELETE. `name_at` is the occurred_at of the
-- conversion that gave the name, so an import of older events never overwrites a newer name.
ALTER TABLE referrers ADD COLUMN name text
    CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200);

CREATE TABLE customer_names (
    program_id  bigint NOT NULL REFERENCES programs (id),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    name_at     timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program_id, customer_id)
);
