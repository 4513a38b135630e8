"""Signed webhooks from a durable outbox, for users with no socket open (contract 1.1, 8)."""
