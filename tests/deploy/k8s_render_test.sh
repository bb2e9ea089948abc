#!/usr/bin/env bash
# Renders every overlay of deploy/k8s with `kubectl kustomize` (offline), validates every
# rendered object against the Kubernetes schemas (k8s_schema_check.py, which also shows
# that broken copies fail), and checks the objects' structure with grep/awk: the expected
# kinds, GPU limits only in the gpu overlay, probe ports that the Service exposes, and a
# termination grace period longer than the server's --drain-seconds. yamllint checks the
# YAML where installed. No cluster and no PyPI packages.
# Usage: k8s_render_test.sh [REPO_ROOT] [PYTHON]   (PYTHON: Debian's, with python3-jsonschema)
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
python=${2:-/usr/bin/python3}
k8s=$root/deploy/k8s
if ! command -v kubectl >/dev/null; then
  echo "k8s_render: kubectl not found; skipped"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if command -v yamllint >/dev/null; then
  yamllint -d '{extends: relaxed, rules: {line-length: {max: 120}}}' "$k8s" \
    || fail "yamllint $k8s"
fi

# The value of `key: value` (first match) inside the documents of the given kind. kubectl
# sorts keys, so `kind:` may come after the field: each document is read whole first.
field() {  # field FILE KIND KEY
  awk -v kind="$2" -v key="$3" '
    function flush() { if (doc == kind && v != "") { print v; found = 1; exit } v = ""; doc = "" }
    /^---/ { flush(); next }
    /^kind: / { doc = $2 }
    v == "" && $1 == key":" { v = $2; gsub(/"/, "", v) }
    END { if (!found) flush() }' "$1"
}
# The lines of a probe block (by indentation) in the Deployment.
probe_block() {  # probe_block FILE PROBE
  awk -v probe="$2" '
    $1 == probe":" { ind = match($0, /[^ ]/); inb = 1; next }
    inb { i = match($0, /[^ ]/); if (i <= ind) { inb = 0; next } print }' "$1"
}
# Every `port:` under the probes of the Deployment.
probe_ports() {
  for p in startupProbe readinessProbe livenessProbe; do
    probe_block "$1" "$p" | awk '$1 == "port:" { print $2; exit }'
  done
}

for overlay in "$k8s"/overlays/*/; do
  name=$(basename "$overlay")
  out=$tmp/$name.yaml
  if ! kubectl kustomize "$overlay" >"$out" 2>"$tmp/$name.err"; then
    cat "$tmp/$name.err"
    fail "$name: kubectl kustomize"
    continue
  fi
  echo "k8s_render: $name rendered ($(grep -c '^kind: ' "$out") objects)"
  "$python" "$root/tests/deploy/k8s_schema_check.py" --self-test "$root/tests/deploy/schemas" \
    "$out" || fail "$name: schema validation"
  for kind in Deployment Service ConfigMap PodDisruptionBudget HorizontalPodAutoscaler ServiceMonitor; do
    grep -q "^kind: $kind\$" "$out" || fail "$name: no $kind"
  done
  grep -q '^apiVersion: autoscaling/v2$' "$out" || fail "$name: HPA is not autoscaling/v2"
  grep -q 'name: moe_num_requests_waiting' "$out" || fail "$name: HPA not on moe_num_requests_waiting"
  grep -q '^apiVersion: monitoring.coreos.com/v1$' "$out" || fail "$name: ServiceMonitor apiVersion"
  grep -q 'path: /metrics' "$out" || fail "$name: ServiceMonitor does not scrape /metrics"
  grep -q 'readOnlyRootFilesystem: true' "$out" || fail "$name: root filesystem not read-only"
  grep -q 'runAsNonRoot: true' "$out" || fail "$name: not runAsNonRoot"
  grep -q 'appProtocol: grpc' "$out" || fail "$name: Service has no appProtocol grpc"
  case $name in
    gpu)
      grep -q 'nvidia.com/gpu: 1' "$out" || fail "$name: no nvidia.com/gpu limit"
      grep -q 'claimName: moe-models' "$out" || fail "$name: no moe-models PVC" ;;
    *)
      ! grep -q 'nvidia.com/gpu' "$out" || fail "$name: asks for a GPU" ;;
  esac
  # Probes use ports the Service exposes (grpc 50051, http 8000), gRPC for readiness.
  svc_ports=$(awk '/^---/ { doc = "" } /^kind: / { doc = $2 }
    doc == "Service" && $1 == "port:" { print $2 }' "$out" | sort -u | tr '\n' ' ')
  [ "$svc_ports" = "50051 8000 " ] || fail "$name: Service ports are '$svc_ports'"
  for p in $(probe_ports "$out"); do
    case " $svc_ports" in *" $p "*) ;; *) fail "$name: probe port $p is not a Service port" ;; esac
  done
  [ "$(probe_ports "$out" | wc -l)" -eq 3 ] || fail "$name: expected 3 probes"
  grep -q '^ *grpc:' <<<"$(probe_block "$out" readinessProbe)" \
    || fail "$name: readinessProbe is not gRPC"
  # Drain fits in the grace period.
  grace=$(field "$out" Deployment terminationGracePeriodSeconds)
  drain=$(field "$out" ConfigMap MOE_DRAIN_SECONDS)
  grep -q -- '--drain-seconds=$(MOE_DRAIN_SECONDS)' "$out" || fail "$name: --drain-seconds not from the ConfigMap"
  if [ -z "$grace" ] || [ -z "$drain" ] || ! awk -v g="$grace" -v d="$drain" 'BEGIN { exit !(g > d) }'; then
    fail "$name: terminationGracePeriodSeconds '$grace' not above --drain-seconds '$drain'"
  fi
done

# prometheus-adapter-rules.yaml: ctest k8s_adapter_rules (adapter_rules_check.py).

if [ "$failures" -ne 0 ]; then
  echo "k8s_render: $failures failure(s)"
  exit 1
fi
echo "k8s_render: all overlays render and pass the structural checks"
