"""Helpers shared by the test suite (real servers and processes, no mocks)."""
