"""replicate-webhookd: receive, record and deliver Replicate training jobs."""

__version__ = "0.1.0"
