"""Regional marketplace simulator: CSV batch files in, an outbox read back (``simulator``)."""
