"""Delivering: the durable task queue, the local download and the publishers."""
