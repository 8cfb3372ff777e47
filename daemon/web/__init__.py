"""The dashboard: static pages served at /, and the live event stream."""
