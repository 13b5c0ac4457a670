"""Benchmarks against labsim (`make bench`): figures, not pass/fail."""
