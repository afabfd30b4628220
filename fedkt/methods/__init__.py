"""Every transfer method, one file each.

Importing this package registers every module in it, so adding a method is adding one
file here (see CONTRIBUTING.md). Methods defined elsewhere (a user's own module) are
loaded through the config's ``plugins`` list.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # layering: fedkt.methods only
