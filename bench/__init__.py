"""Benchmarks (not tests): each prints its figures; see DESIGN.md section 8."""
