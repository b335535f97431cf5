"""hubwatch's store: fingerprints, matches, alert outbox and poll cursors in SQLite."""
