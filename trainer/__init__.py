"""tunegate trainer."""
