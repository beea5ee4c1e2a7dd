"""Taking a node out of rotation before it dies: the sequence, its pure rules, its adaptors."""
