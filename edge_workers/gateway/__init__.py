"""The API gateway worker: its Workers entry point, wrangler configuration and bundler."""
