"""Operating the daemon: metrics, request ids and log output."""
