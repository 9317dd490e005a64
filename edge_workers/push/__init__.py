"""The push router worker: its Workers entry point and wrangler configuration."""
