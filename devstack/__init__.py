"""The local platform (`agistack dev`) and the operator CLI."""
