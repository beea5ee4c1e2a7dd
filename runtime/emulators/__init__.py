"""Metadata servers for the three clouds, following each cloud's documented behaviour.

Tests and local fleets point the agent at them. Each has a control API (`/_emulator/...`,
and the same as Python methods) to post notices and inject faults.
"""
