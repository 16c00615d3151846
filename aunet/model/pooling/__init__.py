"""Pooling between stages (SPEC section 4, steps 2 and 4): which positions go down (`pool_index`)
and one `Transition` class per pooling type, registered under its `pooling_type` name.

Every module of this package is imported here, so each type registers itself: a new pooling
type is one new module (a `Transition` subclass under `@register(name)`) plus its tests.
`build_transition(name, ...)` makes a type's module; `pooling_class(name)` gives its class
(parameter and FLOP counts, used by `aunet.model.flops`).
"""

import importlib
import pkgutil

from aunet.model.pooling.base import (PoolIndex, Transition, build_transition, gather_rows, pool_index,
                                      pooling_class, registered_types)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PoolIndex", "Transition", "build_transition", "gather_rows", "pool_index", "pooling_class",
           "registered_types"]
