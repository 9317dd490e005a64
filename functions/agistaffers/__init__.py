"""AGI Staffers: hosting customers, their teams and their sites (the domain layer)."""
