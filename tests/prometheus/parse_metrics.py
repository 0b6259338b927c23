"""Parses OpenMetrics text on standard input with the Prometheus project's own parser
(prometheus_client, strict: a malformed exposition raises) and prints the families as JSON:
{family: {"type": ..., "unit": ..., "samples": [{"name", "labels", "value"}]}}.
Used by tests/e2e_metrics.rs."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "unit": family.unit,
        "samples": [
            {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
        ],
    }
json.dump(families, sys.stdout)
