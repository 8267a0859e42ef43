"""losses: see docs/architecture.md."""
