#!/usr/bin/env bash
# What a user ships to a Spark cluster (the chapter's uber-JAR): one archive holding a Python
# 3.11 virtual environment with tunegate, TensorFlow, Horovod (the wheel packaging/setup.sh
# built and cached) and pyspark/pyarrow, packed with venv-pack for `spark.archives`.
#   packaging/spark/build_archive.sh [OUT]      (default OUT: dist/tunegate-spark-env.tar.gz)
# Then (README, "Fine-tune on Spark"):
#   spark-submit --archives OUT#environment --conf spark.pyspark.python=./environment/bin/python ...
# venv-pack keeps the interpreter as a link: every executor needs Python 3.11 at the same path
# as here, and the same OS family and glibc (the archive holds compiled wheels). For Spark on
# Kubernetes, use the trainer image instead (packaging/docker/Dockerfile.trainer plus `pip install '.[spark]'` and a Java 17 JRE),
# named by spark.kubernetes.container.image.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-dist/tunegate-spark-env.tar.gz}
CACHE=${TUNEGATE_CACHE:-$HOME/.cache/tunegate}
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT

python3 -m venv "$BUILD/env"
"$BUILD/env/bin/python" -m pip install -q --upgrade pip wheel
"$BUILD/env/bin/python" -m pip wheel -q --no-deps -w "$BUILD/wheels" .
"$BUILD/env/bin/python" -m pip install -q "$BUILD"/wheels/tunegate-*.whl'[tf,trainer,spark]'
wheel=$(ls "$CACHE"/wheels/horovod-*/horovod-*.whl 2>/dev/null | tail -1)
[ -n "$wheel" ] || { echo "no cached Horovod wheel under $CACHE/wheels: run packaging/setup.sh first" >&2; exit 1; }
"$BUILD/env/bin/python" -m pip install -q cloudpickle psutil pyyaml packaging cffi "$wheel"
"$BUILD/env/bin/python" -m pip install -q venv-pack==0.2.0
mkdir -p "$(dirname "$OUT")"
"$BUILD/env/bin/venv-pack" -p "$BUILD/env" -o "$OUT" --force
echo "packed $OUT"
