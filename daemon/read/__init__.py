"""Reading: the JSON API over recorded jobs, health checks and admin access."""
