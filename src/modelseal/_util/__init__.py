"""Small shared helpers below every other module (JSON reading, bounds)."""
