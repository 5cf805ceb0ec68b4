"""Make ``import torchvision`` work with a CPU-only torch and a CUDA torchvision wheel.

The torchvision release matching torch 2.13.0 (0.28.0) is built for CUDA. With the
CPU build of torch its C++ operators (``torchvision::nms`` ...) cannot load, and
``torchvision/_meta_registrations.py`` then fails with ``operator torchvision::nms
does not exist`` because it registers fake kernels for operators that are missing.

:func:`import_torchvision` imports torchvision with ``torch.library.register_fake``
temporarily wrapped so that fake-kernel registrations for *missing* torchvision
operators are skipped. Nothing on disk is modified; when the C++ operators load
(a matching CPU or CUDA build), the wrapper changes nothing. The pure-Python parts
of torchvision (datasets, transforms, models) work either way; the compiled ops
(``nms``, ``roi_align``, ``torchvision.io`` decoders) stay unavailable, so image
files are read with PIL.

Every module of this project that needs torchvision (or timm, which imports it)
calls :func:`import_torchvision` first.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_TORCHVISION_PREFIX = "torchvision::"


def _operator_exists(qualname: str) -> bool:
    namespace, _, name = qualname.partition("::")
    name = name.split(".")[0]
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, tolerating missing C++ operators.

    Returns:
        The imported ``torchvision`` module.
    """
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    original = torch.library.register_fake

    def register_fake_if_present(op, *args, **kwargs):
        qualname = op if isinstance(op, str) else getattr(op, "_name", "")
        if qualname.startswith(_TORCHVISION_PREFIX) and not _operator_exists(qualname):
            return (lambda fn: fn) if not args else args[0]
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake_if_present
    try:
        import torchvision
    finally:
        torch.library.register_fake = original
    return torchvision


def torchvision_ops_available() -> bool:
    """Whether torchvision's compiled operators (``nms`` etc.) are loaded."""
    import_torchvision()
    return _operator_exists("torchvision::nms")
