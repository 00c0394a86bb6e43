"""Marks for the tests that need the pose extra (mediapipe).

The extra cannot share the core environment (pyproject.toml, its `pose` extra), so it has one of
its own: .venv-pose, from requirements/pose.lock. Its tests carry the `pose` marker, which the
default run deselects; `make test` runs them in .venv-pose with ATTNFLOW_REQUIRE_POSE=1, where a
missing or broken extra fails the test instead of skipping it.
"""
from __future__ import annotations

import os

import pytest

from pipelines.apps import pose_extract

REQUIRED = os.environ.get("ATTNFLOW_REQUIRE_POSE") == "1"


def _face_mesh_available() -> bool:
    from pipelines.apps.face_mesh import _import_face_mesh

    try:
        _import_face_mesh()
    except pose_extract.PoseExtraMissing:
        return False
    return True


def _marks(available: bool) -> list[pytest.MarkDecorator]:
    skip = pytest.mark.skipif(not available and not REQUIRED,
                              reason="pose extra (mediapipe) not installed: make setup-pose (.venv-pose)")
    return [pytest.mark.pose, skip]


def needs_pose_extra(fn):
    for mark in _marks(pose_extract.pose_extra_available()):
        fn = mark(fn)
    return fn


def needs_face_mesh(fn):
    for mark in _marks(_face_mesh_available()):
        fn = mark(fn)
    return fn
