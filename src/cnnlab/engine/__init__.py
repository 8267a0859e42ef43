"""Training engine: fit loop, callbacks, runtime settings."""
