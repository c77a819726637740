"""The memory working-set estimator: pure functions (no I/O, no clock, no OS probes)."""
