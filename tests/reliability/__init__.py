"""Fault tests: real processes killed, real brokers and databases restarted, real duplicate deliveries; every
input and every stored resource counted after each (docs/RELIABILITY.md has the figures)."""
