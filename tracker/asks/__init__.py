"""The growth side: customers' moments (events), referral candidates, asks at the moment of
delight, the share page and shares (DESIGN section 1)."""
