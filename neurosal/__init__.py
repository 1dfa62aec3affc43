"""neurosal: analog in-memory-computing neuromorphic hardware, simulated in PyTorch, trained on chip."""


def convert(model, **kwargs):
    """Put a torch model's ``nn.Linear`` and ``nn.Conv2d`` layers on crossbars, programmed by
    write-and-verify (see :func:`neurosal.conversion.convert`); returns ``(model, report)``."""
    from .conversion import convert as _convert
    return _convert(model, **kwargs)
