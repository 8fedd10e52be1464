"""tunegate gateway."""
