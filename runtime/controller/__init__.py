"""The fleet controller: decide (pure) how many spot and on-demand replicas to run; adaptors do it."""
