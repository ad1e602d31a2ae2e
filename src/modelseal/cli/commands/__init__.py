"""click commands, one module per area; loaded lazily by modelseal.cli."""
