"""One MLflow model folder, two ways to load it: the tensor-level PyTorch model and the column service.

:func:`save_model` writes the generator with ``mlflow.pytorch.save_model`` (flavour ``pytorch``
exactly as MLflow writes it, so ``mlflow.pytorch.load_model`` still returns the
:class:`~model.export.PackedGenerator`), then points the ``python_function`` flavour at
:mod:`pipelines.serving.pyfunc` instead of MLflow's tensor wrapper: ``mlflow.pyfunc.load_model``
and ``mlflow models serve`` then answer the column requests of :mod:`pipelines.serving.contract`.
Both flavours read the same ``data/`` and ``code/``.  The model's signature and input example are
the column ones (the service's contract); the packed-tensor form is described by the PackedGenerator
itself and by the reference input/output files the registry stores beside it.

:func:`log_model` logs such a folder the way ``mlflow.pytorch.log_model`` does (``Model.log`` with
this module as the flavour).  ``pipelines.serving.pyfunc`` is named by string, MLflow's
``loader_module`` convention, and is not imported here: it imports the apps, which import the
registry, which imports this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import model
import pipelines
from pipelines.serving.contract import check_task, request_signature

LOADER_MODULE = "pipelines.serving.pyfunc"


def project_code_paths() -> list[str]:
    """The packages a process without the repository needs: ``model`` to unpickle the generator,
    ``pipelines`` and ``datasets`` to serve it."""
    paths = []
    for pkg in (pipelines, datasets, model):
        if pkg.__file__ is None:  # a namespace package: no __init__.py to find its folder by
            raise RuntimeError(f"{pkg.__name__} has no __init__.py")
        paths.append(str(Path(pkg.__file__).resolve().parent))
    return paths


def _frame(example: Any) -> Any:
    import pandas as pd

    if example is None or isinstance(example, pd.DataFrame):
        return example
    if isinstance(example, Mapping):
        return pd.DataFrame([dict(example)])
    raise TypeError(
        f"input_example: expected a request row (dict) or a DataFrame, got {type(example).__name__}"
    )


def save_model(
    pytorch_model: Any,
    path: str,
    task: str,
    mlflow_model: Any = None,
    *,
    input_example: Any = None,
    code_paths: list[str] | None = None,
    pip_requirements: list[str] | None = None,
    extra_files: list[str] | None = None,
    serialization_format: str = "pickle",
    **kwargs: Any,
) -> None:
    """Save ``pytorch_model`` (a PackedGenerator) to ``path`` with the pytorch flavour and the
    column pyfunc flavour for ``task`` ("pose" or "portrait").  ``input_example``: one request
    row (column -> value) or a DataFrame of them; ``code_paths`` default to
    :func:`project_code_paths`; ``kwargs`` go to ``mlflow.pytorch.save_model``."""
    import mlflow.pyfunc
    import mlflow.pytorch
    from mlflow.models import Model

    check_task(task)
    if serialization_format != "pickle":
        # "pt2" traces one tensor input and needs a tensor signature; the signature here is the
        # service's columns, and a pickled module keeps any batch size anyway.
        raise ValueError(f"serialization_format {serialization_format!r}: only 'pickle' is supported")
    mlflow_model = Model() if mlflow_model is None else mlflow_model
    mlflow.pytorch.save_model(
        pytorch_model,
        path,
        mlflow_model=mlflow_model,
        code_paths=code_paths or project_code_paths(),
        signature=request_signature(task),
        input_example=_frame(input_example),
        pip_requirements=pip_requirements,
        extra_files=extra_files,
        serialization_format="pickle",
        **kwargs,
    )
    torch_conf = mlflow_model.flavors["pytorch"]
    env = (mlflow_model.flavors.get(mlflow.pyfunc.FLAVOR_NAME) or {}).get("env") or {}
    mlflow.pyfunc.add_to_model(  # replaces the python_function flavour mlflow.pytorch wrote
        mlflow_model,
        loader_module=LOADER_MODULE,
        data=torch_conf["model_data"],
        code=torch_conf.get("code"),
        conda_env=env.get("conda"),
        python_env=env.get("virtualenv"),
        model_config={"task": task},
    )
    mlflow_model.metadata = {**(mlflow_model.metadata or {}), "task": task}
    mlflow_model.save(os.path.join(path, "MLmodel"))


def log_model(pytorch_model: Any, task: str, name: str, **kwargs: Any) -> Any:
    """Log a model :func:`save_model` writes to the active run (``Model.log``, as
    ``mlflow.pytorch.log_model`` does); returns MLflow's ModelInfo."""
    from mlflow.models import Model

    return Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        pytorch_model=pytorch_model,
        task=task,
        serialization_format="pickle",
        **kwargs,
    )
