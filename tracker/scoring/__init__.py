"""Attribution credits and fraud risk, computed from the stored facts."""
