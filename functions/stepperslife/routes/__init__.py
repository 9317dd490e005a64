"""Chalice blueprints, one per area; ``functions.stepperslife.app`` registers them on the one app."""
