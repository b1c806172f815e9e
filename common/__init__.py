"""What every package of the project may import: error types and exit codes, atomic file writes."""
