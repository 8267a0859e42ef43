"""new: see docs/architecture.md."""
