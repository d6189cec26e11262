"""Packaged TOML: the model registry and run profiles."""
