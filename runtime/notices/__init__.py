"""Preemption notice monitors: one small class per source, all yielding `InterruptionEvent`."""
