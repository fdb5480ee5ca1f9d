"""Check objects against KServe's API types, as its Python SDK (the pinned ``kserve``) defines
them: every field must exist on its type, and every value must have the field's type.

The SDK's models are generated from KServe's OpenAPI schema, the one its CRDs carry; nested
Kubernetes types (containers, volumes, probes) come from the ``kubernetes`` client's models.

>>> check({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
...        "spec": {"predictor": {"minReplica": 1}}}, "V1beta1InferenceService")
['spec.predictor.minReplica: no such field in V1beta1PredictorSpec']
"""

from __future__ import annotations

import re
from typing import Any

PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "ResourceQuantity": (str, int, float),
    "datetime": (str,),
}


def _model(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def check(value: Any, type_name: str, path: str = "") -> list[str]:
    """Problems of ``value`` as a ``type_name`` (``V1beta1InferenceService``, ``list[V1Container]``, ...)."""
    where = path or "(root)"
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(value) for p in check(item, match[1], f"{path}[{i}]")]
    if match := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [p for key, item in value.items() for p in check(item, match[1], f"{path}.{key}")]
    if type_name in PRIMITIVES:
        wanted = PRIMITIVES[type_name]
        if isinstance(value, bool) and bool not in wanted and object not in wanted:
            return [f"{where}: expected {type_name}, got a bool"]
        return [] if isinstance(value, wanted) else [f"{where}: expected {type_name}, got {type(value).__name__}"]
    model = _model(type_name)
    if model is None:  # a type neither SDK names (e.g. IntOrString): accept what YAML gives
        return []
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping"]
    fields = {json_name: python for python, json_name in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path + '.' if path else ''}{key}: no such field in {type_name}")
            continue
        problems += check(item, model.openapi_types[fields[key]], f"{path + '.' if path else ''}{key}")
    return problems


KINDS = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}
