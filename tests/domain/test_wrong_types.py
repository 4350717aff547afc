"""Every public method of `Lifecycle` given a wrong type or an out-of-range value raises one of
our typed errors with a one-sentence message naming the argument, and appends nothing: never a
TypeError, OverflowError, KeyError, AttributeError or a raw pydantic ValidationError (issue 12).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from bus import MemoryLog
from lifecycle_es import (
    BusError,
    ConfigError,
    InvalidMetricError,
    Lifecycle,
    LifecycleConfig,
    LifecycleError,
    SchemaError,
    StepSealed,
    UsageError,
    get_spec,
)

BIG = 10**400
"""An int no float can hold: float(BIG) raises OverflowError."""
DEEP: Any = functools.reduce(lambda inner, _: [inner], range(10_000), 1)
"""A list nested deeper than any encoder's recursion allows."""


@pytest.fixture
def lc() -> Lifecycle:
    """A started run with a module and an active expert."""
    lc = Lifecycle(run_id="wrong-types")
    lc.start()
    lc.register("m", "module", slot=0, layer=0)
    lc.register("x", "expert", state="active", layer=0)
    return lc


Call = Callable[[Lifecycle], Any]

# Each case: id, the call, the error class, the start of its message.
CASES: list[tuple[str, Call, type[Exception], str]] = [
    (
        "observe-huge-int",
        lambda lc: lc.observe({"loss": BIG}),
        InvalidMetricError,
        "metric 'loss' must be finite, got an int too large",
    ),
    (
        "observe-huge-int-entity",
        lambda lc: lc.observe({"loss": -BIG}, entity="m"),
        InvalidMetricError,
        "metric 'loss' must be finite",
    ),
    (
        "observe-entity-list",
        lambda lc: lc.observe({"loss": 1.0}, entity=["x"]),
        UsageError,
        "entity must be a str, got list",
    ),
    (
        "observe-entity-int",
        lambda lc: lc.observe({"loss": 1.0}, entity=3),
        UsageError,
        "entity must be a str, got int",
    ),
    (
        "observe-layer-float",
        lambda lc: lc.observe({"loss": 1.0}, layer=1.5),
        UsageError,
        "layer must be a non-negative int, got 1.5",
    ),
    (
        "observe-step-huge",
        lambda lc: lc.observe({"loss": 1.0}, step=BIG),
        UsageError,
        "step must be at most 2**63 - 1",
    ),
    (
        "register-entity-list",
        lambda lc: lc.register(["x"], "module"),
        UsageError,
        "entity must be a str, got list",
    ),
    (
        "register-spec-list",
        lambda lc: lc.register("n", ["module"]),
        UsageError,
        "spec must be a str, got list",
    ),
    (
        "register-state-list",
        lambda lc: lc.register("n", "module", state=["DORMANT"]),
        UsageError,
        "state must be a str, got list",
    ),
    (
        "register-attrs-list",
        lambda lc: lc.register("n", "module", attrs=[1]),
        UsageError,
        "attrs must be a mapping, got list",
    ),
    (
        "register-attrs-str",
        lambda lc: lc.register("n", "module", attrs="ab"),
        UsageError,
        "attrs must be a mapping, got str",
    ),
    (
        "register-attrs-huge-int",
        lambda lc: lc.register("n", "module", attrs={"a": BIG}),
        SchemaError,
        "cannot register 'n': attrs take JSON values",
    ),
    (
        "register-attrs-int-key",
        lambda lc: lc.register("n", "module", attrs={1: "a"}),
        SchemaError,
        "cannot register 'n': attrs take JSON values",
    ),
    (
        "register-attrs-deep",
        lambda lc: lc.register("n", "module", attrs={"a": DEEP}),
        SchemaError,
        "cannot register 'n': attrs take JSON values",
    ),
    (
        "register-step-huge",
        lambda lc: lc.register("n", "module", step=BIG),
        UsageError,
        "step must be at most 2**63 - 1",
    ),
    (
        "transition-entity-list",
        lambda lc: lc.transition(["x"], to="dormant"),
        UsageError,
        "entity must be a str, got list",
    ),
    (
        "transition-to-list",
        lambda lc: lc.transition("x", to=["dormant"]),
        UsageError,
        "to must be a str, got list",
    ),
    (
        "transition-trigger-int",
        lambda lc: lc.transition("x", trigger=3),
        UsageError,
        "trigger must be a str, got int",
    ),
    (
        "transition-metric-huge-int",
        lambda lc: lc.transition("x", to="dormant", metrics={"a": BIG}),
        InvalidMetricError,
        "metric 'a' must be finite",
    ),
    ("seal-step-str", lambda lc: lc.seal("3"), UsageError, "step must be an int, got str"),
    ("seal-step-huge", lambda lc: lc.seal(BIG), UsageError, "step must be at most 2**63 - 1"),
    ("advance-huge", lambda lc: lc.advance(BIG), UsageError, "step must be at most 2**63 - 1"),
    (
        "set-run-state-list",
        lambda lc: lc.set_run_state(["stopping"]),
        UsageError,
        "set_run_state(to=...) takes a run state name, got list",
    ),
    (
        "set-run-state-reason-int",
        lambda lc: lc.set_run_state("stopping", reason=3),
        UsageError,
        "reason must be a str, got int",
    ),
    (
        "set-run-state-attrs-list",
        lambda lc: lc.set_run_state("stopping", attrs=["saved"]),
        UsageError,
        "set_run_state(attrs=...) must be a mapping, got list",
    ),
    (
        "set-run-state-attrs-not-json",
        lambda lc: lc.set_run_state("stopping", attrs={"when": object()}),
        UsageError,
        "set_run_state(attrs=...) takes JSON values with str keys only",
    ),
    (
        "append-not-events",
        lambda lc: lc.append([3]),
        UsageError,
        "append(events=...) takes a sequence of events",
    ),
    (
        "append-not-a-sequence",
        lambda lc: lc.append(StepSealed(run_id="wrong-types", step=9)),
        UsageError,
        "append(events=...) takes a sequence",
    ),
    (
        "fold-record-without-seq",
        lambda lc: lc.fold([{"kind": "StepSealed"}]),
        SchemaError,
        "fold takes log records, mappings with an int 'seq'",
    ),
    (
        "fold-not-a-record",
        lambda lc: lc.fold([3]),
        SchemaError,
        "fold takes log records, mappings with an int 'seq', got 3",
    ),
    (
        "restore-a-list",
        lambda lc: lc.restore([1]),
        UsageError,
        "restore(state=...) must be a mapping, got list",
    ),
    (
        "restore-an-empty-mapping",
        lambda lc: lc.restore({}),
        UsageError,
        "restore(state=...) takes a Registry.to_state() snapshot",
    ),
    (
        "restore-a-truncated-snapshot",
        lambda lc: lc.restore({**lc.registry.to_state(), "entities": 3}),
        UsageError,
        "restore(state=...) takes a Registry.to_state()",
    ),
    (
        "start-again-with-bad-seed",
        lambda lc: lc.start(seed="x"),
        LifecycleError,
        "run 'wrong-types' has already started",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_a_wrong_argument_raises_a_typed_error_and_appends_nothing(
    lc: Lifecycle, call: Call, error: type[Exception], message: str
) -> None:
    """The call raises the typed one-sentence error naming the argument; registry and log are as before."""
    before, seq = lc.registry.copy(), lc.log.last_seq()
    with pytest.raises(error) as caught:
        call(lc)
    text = str(caught.value)
    assert isinstance(caught.value, LifecycleError | BusError)
    assert text.startswith(message) and "\n" not in text and len(text) < 300, text
    assert lc.registry == before
    assert lc.log.last_seq() == seq
    lc.observe({"loss": 0.5}, entity="m")  # the run still works afterwards
    assert lc.log.last_seq() == seq + 1


START_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("seed-str", {"seed": "x"}, "start(seed=...) must be a 64-bit int, got 'x'"),
    ("seed-float", {"seed": 1.5}, "start(seed=...) must be a 64-bit int, got 1.5"),
    ("seed-huge", {"seed": BIG}, "start(seed=...) must be a 64-bit int, got 1000"),
    ("config-a-set", {"config": {"a", "b"}}, "start(config=...) must be a mapping, got set"),
    ("config-a-list", {"config": [1]}, "start(config=...) must be a mapping, got list"),
    (
        "config-holding-a-set",
        {"config": {"tags": {"a"}}},
        "start(config=...) takes JSON values with str keys only, but config['tags'] is of type set",
    ),
    (
        "config-huge-int",
        {"config": {"a": BIG}},
        "start(config=...) takes JSON values with str keys only, but config['a'] is an int outside 64 bits",
    ),
    (
        "config-deep",
        {"config": {"a": DEEP}},
        "start(config=...) takes JSON values with str keys only, but config['a']",
    ),
    ("world-size-str", {"world_size": "2"}, "start(world_size=...) must be an int, got str"),
    ("world-size-zero", {"world_size": 0}, "start(world_size=...) must be at least 1, got 0"),
    ("torch-version-int", {"torch_version": 2}, "start(torch_version=...): Input should be a valid string"),
]


@pytest.mark.parametrize(("kwargs", "message"), [pytest.param(*c[1:], id=c[0]) for c in START_CASES])
def test_start_with_a_wrong_argument_is_a_config_error_and_records_nothing(
    kwargs: dict[str, Any], message: str
) -> None:
    """start() with a wrong type is a one-sentence ConfigError naming the argument; the run
    stays unstarted and a good start() works afterwards."""
    lc = Lifecycle(run_id="bad-start")
    with pytest.raises(ConfigError) as caught:
        lc.start(**kwargs)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert (lc.log.last_seq(), lc.registry.run_id) == (0, None)
    lc.start()
    assert lc.registry.run_id == "bad-start"


CONSTRUCTOR_CASES: list[tuple[str, Callable[[MemoryLog], Any], str]] = [
    ("log-a-url", lambda log: Lifecycle("redis://localhost/0"), "Lifecycle(log=...) takes a Log, got str"),
    (
        "config-a-dict",
        lambda log: Lifecycle(log, config={"mode": "strict"}),
        "Lifecycle(config=...) takes a LifecycleConfig, got dict",
    ),
    (
        "gates-a-dict",
        lambda log: Lifecycle(log, gates={}),
        "Lifecycle(gates=...) takes a GateLibrary, got dict",
    ),
    ("codec-a-str", lambda log: Lifecycle(log, codec="json"), "Lifecycle(codec=...) takes a Codec, got str"),
    ("specs-an-int", lambda log: Lifecycle(log, specs=3), "Lifecycle(specs=...) takes Spec objects"),
    ("specs-names", lambda log: Lifecycle(log, specs=["module"]), "Lifecycle(specs=...) takes Spec objects"),
    (
        "specs-mapping-of-names",
        lambda log: Lifecycle(log, specs={"module": "module"}),
        "Lifecycle(specs=...) takes Spec objects",
    ),
    ("rank-str", lambda log: Lifecycle(log, rank="0"), "rank must be an int, got str"),
    ("rank-negative", lambda log: Lifecycle(log, rank=-1), "rank must be from 0 to 2**63 - 1, got -1"),
    (
        "gate-params-not-numbers",
        lambda log: LifecycleConfig(gate_params={"g": 3}),
        "gate_params must map gate names to mappings",
    ),
    (
        "gate-params-a-str-value",
        lambda log: LifecycleConfig(gate_params={"g": {"k": "1"}}),
        "gate_params must map gate names",
    ),
]


@pytest.mark.parametrize(("build", "message"), [pytest.param(*c[1:], id=c[0]) for c in CONSTRUCTOR_CASES])
def test_a_lifecycle_built_from_wrong_parts_is_a_config_error(
    build: Callable[[MemoryLog], Any], message: str
) -> None:
    """A constructor argument of the wrong kind is a one-sentence ConfigError naming it, and the
    log it was given stays empty."""
    log = MemoryLog("parts")
    with pytest.raises(ConfigError) as caught:
        build(log)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert log.last_seq() == 0


def test_specs_given_as_an_iterable_of_spec_objects_still_work() -> None:
    """The check on specs accepts both documented forms: a mapping by name and an iterable."""
    spec = get_spec("module")
    for specs in ({"module": spec}, [spec], (s for s in [spec])):
        assert set(Lifecycle(specs=specs).registry.specs) == {"module"}
