#!/usr/bin/env bash
# Builds the real control plane of the real-cluster suite from Go modules, into a cache outside
# the clone, unless it is there already:
#
#   kube-apiserver, kube-controller-manager, kubectl   k8s.io/kubernetes   (controlplane/kubernetes)
#   etcd                                               go.etcd.io/etcd/server/v3 (controlplane/etcd)
#   helm                                               helm.sh/helm/v4     (controlplane/helm)
#
# plus the third-party CRDs that examples and chart templates use, copied out of the pinned
# modules that publish them (the Go module proxy is their source; see THIRD_PARTY_CRDS below).
#
# Usage: controlplane/build.sh            build what is missing or stale, print the bin folder
#        controlplane/build.sh --print    only print the bin folder
#
# The folder is $OAUTH_TOKEN_OPERATOR_CONTROL_PLANE, by default
# $HOME/.cache/oauth-token-operator/controlplane/bin; a stamp (a digest of the go.mod and go.sum
# files and of this script) says what it was built from, so a version change rebuilds it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${OAUTH_TOKEN_OPERATOR_CONTROL_PLANE:-$HOME/.cache/oauth-token-operator/controlplane/bin}"
if [ "${1:-}" = "--print" ]; then
  echo "$bin"
  exit 0
fi

# Versions, as the go.mod files pin them (used for the version strings the binaries report).
KUBERNETES_VERSION=v1.37.2
HELM_VERSION=v4.3.2
# Third-party CRDs: module@version, then the files inside it.
THIRD_PARTY_CRDS=(
  "github.com/prometheus-operator/prometheus-operator@v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
  "github.com/cert-manager/cert-manager@v1.21.2 deploy/crds/cert-manager.io_certificates.yaml"
  "github.com/cert-manager/trust-manager@v0.25.0 deploy/crds/trust.cert-manager.io_bundles.yaml"
)

command -v go >/dev/null || { echo "build.sh: Go is needed (go 1.26 or later) to build the control plane" >&2; exit 1; }

stamp_of() {
  (cd "$here" && cat build.sh kubernetes/go.mod kubernetes/go.sum etcd/go.mod etcd/go.sum helm/go.mod helm/go.sum) | sha256sum | cut -c1-16
}
want="$(stamp_of)"
tools=(kube-apiserver kube-controller-manager kubectl etcd helm)
complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
[ -d "$bin/../crds" ] || complete=0
if [ "$complete" = 1 ] && [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$bin/../crds"
export GOFLAGS="-trimpath -mod=readonly"
timed() {
  local what="$1"
  shift
  local start=$SECONDS
  echo "build.sh: $what ..." >&2
  "$@"
  echo "build.sh: $what took $((SECONDS - start)) s" >&2
}

k8s_version="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
k8s_version="$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
k8s_version="$k8s_version -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
k8s_version="$k8s_version -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37"
(cd "$here/kubernetes" && timed "kube-apiserver, kube-controller-manager, kubectl ($KUBERNETES_VERSION)" \
  go build -ldflags "-s -w $k8s_version" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && timed "etcd" go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/helm" && timed "helm ($HELM_VERSION)" \
  go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" -o "$bin/helm" helm.sh/helm/v4/cmd/helm)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for entry in "${THIRD_PARTY_CRDS[@]}"; do
  read -r module files <<<"$entry"
  # Outside any module, so that no go.mod or go.sum of ours changes.
  dir="$(cd "$scratch" && GOFLAGS= go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -n "$dir" ] || { echo "build.sh: could not download $module" >&2; exit 1; }
  for f in $files; do
    install -m 0644 "$dir/$f" "$bin/../crds/$(basename "$f")"
  done
done

echo "$want" >"$bin/.stamp"
echo "$bin"
