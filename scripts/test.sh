#!/usr/bin/env bash
# The project's test command (the README's): builds the real control plane when it is missing
# (controlplane/build.sh: kube-apiserver, kube-controller-manager, kubectl, etcd and helm from
# Go modules, into $HOME/.cache/oauth-token-operator/controlplane), then runs every test with
# `cargo test`, the real-cluster suite (tests/real_cluster) included: under this command a
# missing binary fails those tests instead of skipping them. Arguments go to `cargo test`.
#
# Prints how many tests ran against the real API server, per part of the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

phase "control plane (controlplane/build.sh)"
start=$SECONDS
bin="$(controlplane/build.sh | tail -n 1)"
echo "control plane binaries in $bin ($((SECONDS - start)) s)"
export OAUTH_TOKEN_OPERATOR_CONTROL_PLANE="$bin"
export OAUTH_TOKEN_OPERATOR_REAL_CLUSTER=required

phase "cargo test $*"
start=$SECONDS
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
echo "cargo test took $((SECONDS - start)) s"

phase "tests against the real API server"
# The result lines of the real-cluster binary, between its "Running" line and the next one.
real=$(awk '/Running tests\/real_cluster\/main.rs/ {on=1; next} /Running / {on=0} on && /^test .* \.\.\. ok$/ {print $2}' "$log")
if [ -z "$real" ]; then
  echo "no real-cluster test ran (filtered out?)"
else
  echo "$real" | awk -F'::' '{n[$1]++} END {for (m in n) printf "  %-14s %d\n", m, n[m]}' | sort
  echo "$(echo "$real" | wc -l) tests ran against a real kube-apiserver"
fi
