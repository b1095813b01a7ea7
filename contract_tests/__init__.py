"""Contract tests: the spec's promises checked over a real socket (see docs/contract-tests.md)."""
