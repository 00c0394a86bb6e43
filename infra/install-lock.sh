#!/usr/bin/env bash
# Make VENV a new virtual environment holding exactly LOCK's packages, checked against the lock's
# sha256s, then `pip check` it. The worker images run this (infra/Dockerfile), and so does
# `make job-env-check`, so the environment checked here is the one the image ships.
#
#   infra/install-lock.sh VENV LOCK      env: PYTHON (python3), TORCH_CPU_WHEELS (where the
#                                        torch +cpu wheel of a CPU lock is found; as in the Makefile)
#
# Only PyPI and TORCH_CPU_WHEELS are read: the machine's pip configuration (extra indexes,
# find-links, constraints) is ignored, as it is inside an image build.
set -euo pipefail
VENV=$1 LOCK=$2
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_REQUIREMENT PIP_NO_INDEX
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
find_links=()
if grep -q '^torch==[^ ]*+cpu' "$LOCK"; then
  # As the Makefile decides: /opt/wheels where a machine keeps the wheel, else the PyTorch CPU index.
  default=https://download.pytorch.org/whl/cpu/torch/
  version=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCK")
  compgen -G "/opt/wheels/torch-$version-*.whl" >/dev/null && default=/opt/wheels
  find_links=(--find-links "${TORCH_CPU_WHEELS:-$default}")
fi
[ -x "$VENV/bin/python" ] && { echo "install-lock: $VENV already exists; give a new folder" >&2; exit 2; }
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps --index-url https://pypi.org/simple \
  "${find_links[@]}" ${PIP_INSTALL_OPTIONS:-} -r "$LOCK"
"$VENV/bin/python" -m pip check
