"""The node agent: supervisor, readiness/status server, counting proxy, metrics, wiring."""
