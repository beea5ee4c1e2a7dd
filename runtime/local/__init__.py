"""The local fleet: the whole system on one machine (load balancer, nodes, market simulator)."""
