"""Kronecker-factored second-order optimizers (importable with torch alone).

``KFAC`` (with ``inverse`` in eigh | cholesky | rsvd | srevd, i.e. KFAC, RS-KFAC and
SRE-KFAC), ``SINGD`` (INGD, IKFAC, SIKFAC and SINGD with structured factors) and
``STRUCTURES`` (the ten structured matrix classes of the SINGD paper).
"""

__all__ = ["KFAC", "SINGD", "STRUCTURES"]


def __getattr__(name: str):
    # Lazy imports keep `import optim` cheap and let each piece be imported alone.
    if name == "KFAC":
        from optim.kfac import KFAC

        return KFAC
    if name == "SINGD":
        from optim.singd import SINGD

        return SINGD
    if name == "STRUCTURES":
        from optim.structures import STRUCTURES

        return STRUCTURES
    raise AttributeError(f"module 'optim' has no attribute {name!r}")
