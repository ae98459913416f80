"""``tamalloc oom --json`` against docs/oom.schema.json, and its --top."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from _support import Child, MiB, run_cli
from tamalloc.oom import OomCandidate, OomDomain

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "oom.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def doomed(spawn_child: object) -> Child:
    """A child with oom_score_adj 1000: the system OOM's victim."""
    child: Child = spawn_child(reserve=32 * MiB, touch=8 * MiB)  # type: ignore[operator]
    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
        f.write("1000")
    return child


def oom_json(*args: str) -> list[dict[str, Any]]:
    result = run_cli("oom", "--json", "--backend", "procfs", *args)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, list)
    return document


@pytest.mark.parametrize("args", [(), ("--top", "1"), ("--top", "3"), ("--cgroup", "/")])
def test_real_output_follows_the_schema(
    validator: jsonschema.Draft202012Validator, doomed: Child, args: tuple[str, ...]
) -> None:
    document = oom_json(*args)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    assert document[0]["victim"]["pid"] == doomed.pid


def test_the_schema_rejects_what_breaks_its_promises(
    validator: jsonschema.Draft202012Validator, doomed: Child
) -> None:
    """Not a schema that takes anything: each promise, broken once, is caught."""
    document = oom_json()
    assert validator.is_valid(document)

    def broken(change: Any) -> list[dict[str, Any]]:
        copied = copy.deepcopy(document)
        change(copied[0])
        return copied

    def drop(key: str) -> Any:
        return lambda d: d.pop(key)

    for change in (
        drop("headroom_kb"),
        drop("bound_by"),
        drop("more_candidates"),
        lambda d: d.update(cgroup="/x"),  # a system domain has no cgroup
        lambda d: d.update(bound_by="/x"),
        lambda d: d.update(killed_pids=[]),  # a victim and nobody killed
        lambda d: d.update(headroom_kb=-1),
        lambda d: d["victim"].pop("points"),
        lambda d: d["victim"].update(unkillable="oom_score_adj -1000"),  # yet points
        lambda d: d["victim"].update(score=2001),
    ):
        assert not validator.is_valid(broken(change))


def test_the_schema_requires_every_field_the_model_writes() -> None:
    """The schema and the model's records name the same fields: a field added to the
    model must be documented (or left out on purpose here)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    domain_fields = set(OomDomain.__dataclass_fields__) | {"more_candidates"}
    assert set(schema["$defs"]["domain"]["required"]) == domain_fields
    assert set(schema["$defs"]["candidate"]["required"]) == set(OomCandidate.__dataclass_fields__)


def test_top_limits_the_candidates_of_each_domain(doomed: Child) -> None:
    everything = oom_json()
    system = everything[0]
    assert len(system["candidates"]) > 2
    for top in (1, 2):
        cut = oom_json("--top", str(top))
        assert [d["cgroup"] for d in cut] == [d["cgroup"] for d in everything]
        first = cut[0]
        assert first["candidates"][0]["pid"] == doomed.pid
        assert len(first["candidates"]) == top
        for domain in cut:
            dies = set(domain["killed_pids"])
            listed = domain["candidates"]
            # the first N, then only whoever dies below the cut
            assert [c for c in listed[top:] if c["pid"] not in dies] == []
            assert len(listed) <= top + len(dies)
        # how many were left out (processes come and go between runs: not exact)
        assert first["more_candidates"] > len(system["candidates"]) // 2 - top
    assert system["more_candidates"] == 0


def test_ties_and_shared_mm_kills_follow_the_schema(
    validator: jsonschema.Draft202012Validator,
) -> None:
    from tamalloc.cli.oom import _json_domain
    from tamalloc.oom import predict
    from test_oom_model import cg, inputs, task

    tasks = [task(30, 4, cgroup="/a"), task(10, 4, cgroup="/a"), task(31, 4, cgroup="/b")]
    data = inputs(
        tasks,
        {"/a": cg(6, cgroup_id=7, procs=(30, 10)), "/b": cg()},
        shared_mm=((10, 31),),
    )
    document = [_json_domain(d, None) for d in predict(data)]
    assert validator.is_valid(document), list(validator.iter_errors(document))
    a = next(d for d in document if d["cgroup"] == "/a")
    assert (a["tied_pids"], a["tie_order_known"]) == ([30, 10], True)
    assert a["killed_pids"] == [10, 31]
    assert a["shared_mm_kills"][0]["pid"] == 31 and a["shared_mm_kills"][0]["shares_mm_with"] == 10
    broken = copy.deepcopy(document)
    next(d for d in broken if d["cgroup"] == "/a")["shared_mm_kills"][0].pop("shares_mm_with")
    assert not validator.is_valid(broken)
