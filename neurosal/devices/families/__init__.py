"""The response families of device cards, one module each (see :mod:`neurosal.devices.family`).

Every module here is imported when the package is, and registers its family by name: adding
a family is adding a module to this folder.

May import: :mod:`neurosal.devices.family`, :mod:`neurosal.cards`.
"""

import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")
