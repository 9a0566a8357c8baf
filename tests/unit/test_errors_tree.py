"""One exception tree: every exception sdcadm defines is an SdcadmError (so
the CLI's main() can map it to a message and an exit code), except the
module-private control-flow ones that never leave their module."""

import importlib
import inspect
import pkgutil

import sdcadm
from sdcadm.errors import SdcadmError

# Raised and caught inside one module; each says why at its definition.
OUTSIDE_THE_TREE = {
    "sdcadm.agent.api.HttpError",  # the HTTP layer's own answer, inside the handler
}


def _modules():
    for info in pkgutil.walk_packages(sdcadm.__path__, "sdcadm."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def test_every_public_exception_is_in_the_tree():
    outside = []
    for module in _modules():
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                continue
            qualified = f"{module.__name__}.{name}"
            if name.startswith("_") or qualified in OUTSIDE_THE_TREE:
                continue
            if not issubclass(cls, SdcadmError):
                outside.append(qualified)
    assert outside == []

