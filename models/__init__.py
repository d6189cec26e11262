"""Networks, the model registry, and verified weights (imports nothing else of matteflow)."""

from matteflow.models.registry import LoadedModel, ModelSpec, get_spec, load, specs

__all__ = ["LoadedModel", "ModelSpec", "get_spec", "load", "specs"]
