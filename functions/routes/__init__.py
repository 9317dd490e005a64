"""Chalice blueprints, one per area; ``functions.app`` registers them on the one app."""
