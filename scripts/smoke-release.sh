#!/usr/bin/env bash
# Smoke-test the collector of Helm release $RELEASE in $NAMESPACE (the kubeconfig in $KUBECONFIG):
# forward its Service's API and ops ports here and run scripts/smoke.py through them, so the
# check needs neither the Ingress's DNS nor its certificate. The key: $PLANTWIRE_SMOKE_KEY.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RELEASE:?}" "${NAMESPACE:?}" "${PLANTWIRE_SMOKE_KEY:?}"

service=$(kubectl get service --namespace "$NAMESPACE" --output name \
    --selector "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=collector")
if [ "$(printf '%s\n' "$service" | grep -c .)" -ne 1 ]; then
    echo "smoke: expected one collector Service of release $RELEASE, found: ${service:-none}" >&2
    exit 1
fi
api_port=18080
ops_port=18090
kubectl port-forward --namespace "$NAMESPACE" "$service" "$api_port:http" "$ops_port:ops" &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
# smoke.py retries each check for --wait seconds, which covers the forward coming up.
python3 scripts/smoke.py --api "http://127.0.0.1:$api_port" --ops "http://127.0.0.1:$ops_port" \
    --wait 60
