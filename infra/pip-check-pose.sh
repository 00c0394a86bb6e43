#!/usr/bin/env bash
# `uv pip check` for the pose environment (.venv-pose, requirements/pose.lock). mediapipe 0.10.21
# declares dependencies that requirements/pose-overrides.txt replaces on purpose, so the check
# cannot come back clean there; this passes when every complaint is mediapipe's about one of those
# overridden packages, and fails (printing the check) on anything else.
#
#   infra/pip-check-pose.sh UV PYTHON
set -euo pipefail
UV=$1 PY=$2
OVERRIDES="$(dirname "$0")/../requirements/pose-overrides.txt"
names=$(grep -oE '^[A-Za-z0-9][A-Za-z0-9_.-]*' "$OVERRIDES" | sort -u | paste -sd'|')
if out=$("$UV" pip check --python "$PY" 2>&1); then
  echo "pip check (pose): clean"; exit 0
fi
unexpected=$(grep -E '^The package' <<<"$out" | grep -vE "^The package \`mediapipe\` requires \`($names)([<>=!~;, \`]|$)" || true)
if [ -n "$unexpected" ]; then
  echo "$out" >&2
  echo "pip check (pose): problems beyond mediapipe's overridden declarations:" >&2
  echo "$unexpected" >&2
  exit 1
fi
echo "pip check (pose): only mediapipe's overridden declarations ($(grep -c '^The package' <<<"$out"): $names)"
