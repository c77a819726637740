"""The package's value types (``typing.NamedTuple``, docs/architecture.md) keep what a frozen dataclass gave."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import fleet_watch


def _value_types() -> list[type]:
    out = []
    for info in pkgutil.walk_packages(fleet_watch.__path__, "fleet_watch."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        out += [obj for obj in vars(module).values() if inspect.isclass(obj) and issubclass(obj, tuple)
                and hasattr(obj, "_fields") and obj.__module__ == info.name]
    return out


def test_no_value_has_a_shared_mutable_default() -> None:
    """A NamedTuple default is shared by every instance, and ``field(default_factory=...)`` is not understood: it
    becomes the default itself. Both are bugs a dataclass would have caught."""
    types = _value_types()
    assert len(types) > 50
    bad = [f"{t.__module__}.{t.__name__}.{name}: {type(default).__name__}" for t in types
           for name, default in t._field_defaults.items()  # type: ignore[attr-defined]
           if isinstance(default, dataclasses.Field | dict | list | set | bytearray)]
    assert bad == []


def test_no_field_hides_a_tuple_method_but_nvmls_index() -> None:
    hidden = [f"{t.__module__}.{t.__name__}.{name}" for t in _value_types()
              for name in t._fields if name in ("count", "index")]  # type: ignore[attr-defined]
    assert hidden == ["fleet_watch.probes.nvml.GpuDevice.index"]
