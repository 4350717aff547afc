"""Reading Prometheus and OpenMetrics text back with prometheus_client's own parsers.

The tests of the metrics projection and of `lifecycle-es metrics` check what a scraper would
see: the families and their types, and every sample by name and labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics_text
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

from projections import MetricsProjection

Series = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Exposition:
    """What a scraper reads: each family's type by family name, each sample by name and labels."""

    types: dict[str, str]
    samples: dict[Series, float]

    def sample(self, name: str, **labels: str) -> float:
        """The value of the sample `name` with exactly these labels."""
        return self.samples[(name, frozenset(labels.items()))]


def parse_prometheus(text: str) -> Exposition:
    """Parse the Prometheus text format with prometheus_client's parser."""
    return _exposition(parse_prometheus_text(text))


def parse_openmetrics(text: str) -> Exposition:
    """Parse the OpenMetrics text format (strict: `# EOF` and `_total` counters) with
    prometheus_client's parser."""
    return _exposition(parse_openmetrics_text(text))


def parse_both(prometheus: str, openmetrics: str) -> Exposition:
    """Parse the same figures written in both formats; assert both parsers read the same."""
    read = parse_prometheus(prometheus)
    assert parse_openmetrics(openmetrics) == read
    return read


def row_samples(metrics: MetricsProjection, run: str | None = None) -> dict[Series, float]:
    """Every sample the projection's rows call for, by name and labels (with the run's label if
    given): what a scrape must hold, and nothing else."""
    base = {} if run is None else {"run": run}
    samples: dict[Series, float] = {}

    def put(name: str, value: float, **labels: str) -> None:
        samples[(name, frozenset({**base, **labels}.items()))] = value

    for g in metrics.gate_rows():
        put("lifecycle_gate_checks_total", g["passed"], gate=g["gate"], result="passed")
        put("lifecycle_gate_checks_total", g["failed"], gate=g["gate"], result="failed")
    for t in metrics.transition_rows():
        edge = {"spec": t["spec"], "from": t["from"], "to": t["to"]}
        if t["applied"]:
            put("lifecycle_transitions_total", t["applied"], **edge)
        if t["rejected"]:
            put("lifecycle_transitions_rejected_total", t["rejected"], **edge)
    for p in metrics.population_rows():
        put("lifecycle_entities", p["count"], spec=p["spec"], state=p["state"])
    for r in metrics.time_in_state_rows():
        put("lifecycle_time_in_state_steps_total", r["steps"], spec=r["spec"], state=r["state"])
    put("lifecycle_step", metrics.step)
    put("lifecycle_seq", metrics.seq)
    return samples


def _exposition(families: Iterable[Metric]) -> Exposition:
    types: dict[str, str] = {}
    samples: dict[Series, float] = {}
    for family in families:
        assert family.name not in types, f"family {family.name} twice"
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"series {key} twice"
            samples[key] = s.value
    return Exposition(types, samples)
