"""fedkt: federated knowledge transfer.

The ``fedkt`` package is the Flower-free core: configuration, data, models, the three
parts of every transfer method (knowledge, fusion, distillation loss), training loops,
metrics and results.  The Flower apps live in the sibling packages ``clients``,
``server`` and ``strategies``.
"""

__version__ = "0.1.0"
