"""Referral candidates: who is likely to refer a customer who converts and is not fraud
(a library: never imports tracker)."""
