"""The peer model cache ("cachefs"): manifests, the node's chunk store, the peer server, the pull."""
