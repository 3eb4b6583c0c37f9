"""What comes in from the merchant: conversions (live and imported) and bulk imports."""
