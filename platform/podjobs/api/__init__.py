"""podjobs.api: the HTTP API (issue 7)."""
