"""Talking to Replicate's HTTP API: the client, its endpoints and reconciliation."""
