"""Demo and test tools: the seeded fleet simulator, its scenarios, the load generator and backfill."""
