"""History: usage from the past turned into Prometheus TSDB blocks plus the state live counters continue from."""
