"""tunegate converters."""
