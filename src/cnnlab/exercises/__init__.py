"""exercises: see docs/architecture.md."""
