"""Receiving: client address, body, signature and the webhook route."""
