"""Fixtures for the client's pure unit tests (the doubles live in client_fakes.py)."""

from client_fakes import clock, make_client, policy, sleep

__all__ = ["clock", "make_client", "policy", "sleep"]
