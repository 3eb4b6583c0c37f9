-- Incentive experiments (issue 16): the reward variant a referrer was assigned when first seen
-- under a program with `settings.reward.variants` (sticky: never changed once set, so a
-- variant added later does not move anyone), and the variant whose rules made each reward
-- (NULL: the program's plain `reward.rules`).
ALTER TABLE referrers
    ADD COLUMN variant text CHECK (variant IS NULL OR length(variant) BETWEEN 1 AND 64);
ALTER TABLE rewards
    ADD COLUMN variant text CHECK (variant IS NULL OR length(variant) BETWEEN 1 AND 64);
