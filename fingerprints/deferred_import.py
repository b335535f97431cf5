"""A module imported on its first use, for the heavy libraries only some paths need.

torch alone costs ~4 s of CPU to import, scipy.stats ~2.5 s; the modules that use them are also
imported for their constants and cheap helpers (the CLI's help text, a p-value, a test's
parameters) by callers that never run the heavy path.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class DeferredModule:
    """Stands for the module ``name``; the first read of a public attribute imports it. Dunder
    names are never forwarded: tools that inspect objects (pytest asks every name of a test module
    for ``__test__``) must not load the module.

    Not importlib.util.LazyLoader: before Python 3.12 its module is not thread-safe, and two threads
    first using it at once (the bot compares in worker threads) could execute torch's __init__
    twice. Every read here goes through importlib.import_module, whose import lock runs the module
    once; after that it is a dictionary lookup.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.module(), attr)

    def module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"
