#!/usr/bin/env python3
"""Lints the Helm chart with Helm's own library (helm-sdkpy) for each value set, and validates
values.yaml against values.schema.json. Exits non-zero on any warning or error.

helm-sdkpy's lint takes no value overrides, so each value set is linted on a copy of the chart
whose values.yaml has the overrides merged in."""
import asyncio
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml
from helm_sdkpy import Configuration, Lint

CHART = Path(__file__).resolve().parent.parent / "charts" / "oauth-token-operator"
VALUE_SETS = {
    "defaults": {},
    "ha-namespaced-monitoring": {
        "replicas": 2,
        "watchNamespaces": ["a", "b"],
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
    },
    "private-ca-behind-a-proxy": {
        "extraCaBundle": {"name": "corp-root-ca", "key": "trust-bundle.pem"},
        "proxy": {"httpsProxy": "http://user:pass@proxy.corp:3128", "httpProxy": "proxy.corp:8080"},
        "networkPolicy": {"enabled": True},
    },
    "no-proxy-as-a-string": {
        "proxy": {"httpsProxy": "https://proxy.corp", "noProxy": "$(KUBERNETES_SERVICE_HOST),.svc,10.0.0.0/8"},
        "networkPolicy": {"enabled": True},
    },
    "service-account-tokens": {"serviceAccountTokens": {"enabled": True}},
    "service-account-tokens-namespaced": {
        "serviceAccountTokens": {"enabled": True},
        "watchNamespaces": ["a", "b"],
    },
    "dashboard-elsewhere": {
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "labels": {"grafana_dashboard": "1", "team": "platform"}},
    },
}
# The README's behind-a-proxy example is a values file: lint it as it is.
VALUE_SETS["examples/behind-a-proxy.yaml"] = yaml.safe_load(
    (CHART.parent.parent / "examples" / "behind-a-proxy.yaml").read_text()
)
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    failed = False
    for name, override in VALUE_SETS.items():
        merged = merge(values, override)
        try:
            jsonschema.validate(merged, schema)
        except jsonschema.ValidationError as e:
            print(f"{name}: values do not match values.schema.json: {e.message}")
            failed = True
        with tempfile.TemporaryDirectory() as tmp:
            chart = Path(tmp) / CHART.name
            shutil.copytree(CHART, chart)
            (chart / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
            result = asyncio.run(Lint(Configuration()).run(str(chart)))
        messages = result.get("Messages") or []
        errors = result.get("Errors") or []
        worst = max([m.get("Severity", 0) for m in messages] + [0])
        for m in messages:
            print(f"{name}: [{SEVERITY.get(m.get('Severity'), '?')}] {m.get('Path')}: {m.get('Err')}")
        for e in errors:
            print(f"{name}: error: {e}")
        if errors or worst >= 2:
            failed = True
        else:
            print(f"{name}: helm lint clean ({result.get('TotalChartsLinted')} chart)")
    # A typo in a value must be refused by the schema.
    try:
        jsonschema.validate(merge(values, {"replica": 2}), schema)
        print("values.schema.json accepted a misspelt key")
        failed = True
    except jsonschema.ValidationError:
        pass
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
