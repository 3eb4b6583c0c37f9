"""Attacks from issue 12, one test per defect, each written as the attack."""
