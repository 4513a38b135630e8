"""Provider active status and seeker search preference."""
