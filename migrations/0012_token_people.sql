-- Tokens belong to people, and a revoked token stops working at once on every worker.
--
-- `person` ties a token to the person holding it (`refguard token create --person P`): the
-- four-eyes rule counts people, so one person's two tokens are one pair of eyes. A token tied
-- to nobody counts as its own person.
ALTER TABLE api_tokens ADD COLUMN person text
    CHECK (person IS NULL OR length(person) BETWEEN 1 AND 200);

-- Who approved, as the four-eyes rule counts them: 'person:<P>' for a token tied to a person,
-- else the approving actor itself. Rows written before this column count by actor.
ALTER TABLE reward_approvals ADD COLUMN person text;
CREATE UNIQUE INDEX reward_approvals_person
    ON reward_approvals (program_id, reward_id, (coalesce(person, actor)));

-- Workers cache resolved tokens; a changed or deleted token is announced here so each one drops
-- it from its cache (tracker/auth.py TokenCache), as links are announced on refguard_links.
CREATE FUNCTION refguard_notify_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('refguard_tokens', OLD.id::text);
    ELSE
        PERFORM pg_notify('refguard_tokens', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER api_tokens_notify AFTER UPDATE OR DELETE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION refguard_notify_token();
