"""The server core: the usage event and its validation, pricing, the one ingest function
(aggregate), the state store, the metric contract and its exposition. Nothing here knows HTTP."""
