"""Model factory: ``build_model(name, num_classes, input_shape, preset, **kwargs)``."""

from models.registry import MODELS, build_model, register_model

__all__ = ["MODELS", "build_model", "register_model"]
