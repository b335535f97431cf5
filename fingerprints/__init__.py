"""Model fingerprints: pure computation over a byte-range reader (no network, no database)."""
