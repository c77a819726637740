"""Use cases: wire probes, store and core together; own the transactions and the clock."""
