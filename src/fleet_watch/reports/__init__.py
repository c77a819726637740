"""Data in, documents out: the state snapshot (``status --json``, later ``state.json``) and its text forms."""
