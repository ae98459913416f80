"""``NamedTuple`` for the package's records, without the :mod:`typing` module.

``class MemStats(NamedTuple)`` with this base makes what ``typing.NamedTuple`` makes:
a :func:`collections.namedtuple` class whose fields are the annotated names in order,
the values given to them their defaults, and every other name of the body (methods,
properties, the docstring) its own. Importing ``typing`` for it cost a third of a
bare Python's start-up in every ``tamalloc`` command, which loads ``collections``
anyway (argparse needs it). The annotations are kept as written and never evaluated.

Modules import it as ``typing.NamedTuple`` for mypy, which checks the records as
typed named tuples, and as this one at run time::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from ._records import NamedTuple
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Called with names known only at run time, which mypy's namedtuple() check refuses.
_namedtuple: Callable[..., type[tuple[object, ...]]] = namedtuple

# What namedtuple() defines or the class statement adds: a body must not set the
# former (as typing.NamedTuple refuses to), the latter are not copied.
_RESERVED = frozenset(
    {"_make", "_replace", "_asdict", "_fields", "_field_defaults", "__new__", "__init__"}
    | {"__slots__", "__getnewargs__", "__match_args__"}
)
_SKIPPED = frozenset({"__annotations__", "__module__", "__qualname__", "__dict__", "__weakref__"})


class _NamedTupleMeta(type):
    def __new__(mcs, typename: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
        if not bases:  # NamedTuple itself
            return super().__new__(mcs, typename, bases, namespace)
        if bases != (NamedTuple,):
            raise TypeError("a record's only base is NamedTuple")
        annotations = dict(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        fields = list(annotations)
        defaults = [namespace[name] for name in fields if name in namespace]
        # namedtuple() gives its defaults to the last fields: they must be those.
        for name in fields[: len(fields) - len(defaults)]:
            if name in namespace:
                raise TypeError(f"non-default field {name} of {typename} follows a default one")
        record = _namedtuple(
            typename, fields, defaults=defaults, module=str(namespace["__module__"])
        )
        record.__qualname__ = str(namespace.get("__qualname__", typename))
        record.__annotations__ = annotations
        for name, value in namespace.items():
            if name in _RESERVED:
                raise AttributeError(f"{typename} may not set {name}: namedtuple defines it")
            if name not in _SKIPPED and name not in annotations:
                setattr(record, name, value)
        return record


class NamedTuple(metaclass=_NamedTupleMeta):
    """The base of a record: see the module's note."""
