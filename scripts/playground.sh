#!/usr/bin/env bash
# A playground in one command: builds (or reuses) the control plane binaries, then starts a local
# kube-apiserver, etcd and kube-controller-manager, installs the chart (CRD, RBAC), runs the
# operator as the chart's pod would, serves the demo token endpoint on 127.0.0.1:8089 and applies
# examples/local.yaml. It prints `kubectl get oac -A` once the client is Ready, where the token
# is, and the kubeconfig to keep exploring with. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
controlplane/build.sh
exec cargo test --quiet --test playground
