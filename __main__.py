"""Pulumi entry point (`pulumi up -s <stack>`): declare the fleets in stacks/Pulumi.<stack>.yaml."""

from spotstack.components.program import run

run()
