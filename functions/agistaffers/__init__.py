"""AGI Staffers: the hosting back office."""
