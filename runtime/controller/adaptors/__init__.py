"""Carry a decision out: one adaptor per place a fleet runs."""
