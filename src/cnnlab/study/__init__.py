"""study: see docs/architecture.md."""
