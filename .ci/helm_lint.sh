#!/usr/bin/env bash
# Lints the chart with the real helm (built by controlplane/build.sh) for its defaults, each
# value set under charts/oauth-token-operator/ci/ and examples/behind-a-proxy.yaml, as
# `helm lint --strict` (warnings fail); helm checks values.schema.json on each. A misspelt value
# must be refused by the schema.
set -euo pipefail
cd "$(dirname "$0")/.."
helm="$(controlplane/build.sh --print)/helm"
chart=charts/oauth-token-operator
failed=0
lint() {
  local name="$1"
  shift
  if out="$("$helm" lint --strict "$chart" "$@" 2>&1)"; then
    echo "$name: helm lint clean"
  else
    echo "$name: helm lint failed:"
    echo "$out"
    failed=1
  fi
}
lint defaults
for values in "$chart"/ci/*-values.yaml examples/behind-a-proxy.yaml; do
  lint "$values" -f "$values"
done
if "$helm" lint --strict "$chart" --set replica=2 >/dev/null 2>&1; then
  echo "values.schema.json accepted a misspelt key (replica)"
  failed=1
fi
exit "$failed"
