"""Benchmarks for the osmo storage engine (not part of the default test run)."""
