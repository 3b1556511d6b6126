"""The local page and JSON API."""
