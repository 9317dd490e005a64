"""Chalice blueprints, one per resource; ``functions.stepperslife.app`` registers them on the one app.

Handlers parse, call a use case and shape the answer; the use cases own their effects (outbox,
invalidation, forgetting recommendations)."""
