"""redteam6: a blind red team on a food-delivery marketplace's referral program (see
__main__.py; scenario.py says what it plants)."""
