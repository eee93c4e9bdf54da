"""Per-minute rollups: table definitions, deltas from new raw rows, log-bucket histograms, reads."""
