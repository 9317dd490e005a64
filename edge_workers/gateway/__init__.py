"""The API gateway worker: its Workers entry point (with the rate-limit Durable Object) and wrangler configuration."""
