"""The records' base at run time (tamalloc._records.NamedTuple) makes the classes that
typing.NamedTuple makes, which mypy reads in its place."""

from __future__ import annotations

import pickle
import typing

import pytest

from tamalloc import _records
from tamalloc.models import MemStats, TotalMemStats
from tamalloc.system_models import SystemStats


class Plain(_records.NamedTuple):
    """A record."""

    count: int
    name: str | None = None

    @property
    def doubled(self) -> int:
        return self.count * 2

    def label(self) -> str:
        return f"{self.name}:{self.count}"


class Typed(typing.NamedTuple):
    """A record."""

    count: int
    name: str | None = None

    @property
    def doubled(self) -> int:
        return self.count * 2

    def label(self) -> str:
        return f"{self.name}:{self.count}"


def test_the_same_class_as_typing_makes() -> None:
    for cls in (Plain, Typed):
        assert cls.__mro__[1:] == (tuple, object)
        assert cls._fields == ("count", "name")
        assert cls._field_defaults == {"name": None}
        assert cls.__doc__ == "A record."
        assert cls.__module__ == __name__
        assert cls.__qualname__ == cls.__name__
        assert list(cls.__annotations__) == ["count", "name"]
        record = cls(3)
        assert record == (3, None)
        assert repr(record) == f"{cls.__name__}(count=3, name=None)"
        assert record.doubled == 6 and record._replace(name="x").label() == "x:3"
        assert record._asdict() == {"count": 3, "name": None}
        assert pickle.loads(pickle.dumps(record)) == record
        with pytest.raises(AttributeError):
            record.count = 4
        with pytest.raises(TypeError):
            cls()


def test_what_typing_refuses_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default field"):

        class Misordered(_records.NamedTuple):
            first: int = 0
            second: int

    with pytest.raises(AttributeError, match="_asdict"):

        class Overriding(_records.NamedTuple):
            first: int

            def _asdict(self) -> dict[str, int]:
                return {}


def test_the_package_records_are_built_on_it() -> None:
    """What tamalloc stats builds: named tuples, without the typing module."""
    assert MemStats.__mro__[1:] == (tuple, object)
    assert MemStats.build(1, "a", 10, 5, 5, 0, 0, 0, 0, 0).committed_pct == 50.0
    assert TotalMemStats._field_defaults == {"some_hidden": None}
    assert SystemStats._fields[-1] == "swap"
    assert TotalMemStats(1, 2, 3, 4, 5, 6, 7, 2).overcommit_mode == "never"
