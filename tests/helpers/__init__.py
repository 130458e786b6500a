"""Helpers shared by the end-to-end, crash-safety and hostile-input tests."""
