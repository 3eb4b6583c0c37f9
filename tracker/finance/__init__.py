"""Rewards from credits: rules, clearance, the ledger, payouts, evidence, webhooks."""
