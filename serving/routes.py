"""The Open Inference Protocol v2 routes a client may use: health, metadata, ready and inference.

This is the whole public surface. The model server registers only these (plus its own
``/metrics`` and signed ``/webhooks/mlflow``, which are not public), and the sidecar forwards
only these and answers everything else itself: KServe's repository routes
(``/v2/repository/models/{name}/unload``) would let one anonymous POST unload the model.

Kept free of web-framework imports: the sidecar's hot path matches every request here.

>>> match("POST", "/v2/models/digits/infer")
'infer'
>>> match("POST", "/v2/repository/models/digits/unload") is None
True
>>> match("DELETE", "/v2/health/live")
'method not allowed'
"""

from __future__ import annotations

import re

_NAME = r"[^/]+"
#: The inference route, with the model's name as group ``model`` (the sidecar labels metrics with it).
INFER_PATH = re.compile(rf"^/v2/models/(?P<model>{_NAME})(/versions/{_NAME})?/infer$")
#: (name, methods, pattern) of every public route.
ROUTES: tuple[tuple[str, frozenset[str], re.Pattern[str]], ...] = (
    ("server metadata", frozenset({"GET", "HEAD"}), re.compile(r"^/v2/?$")),
    ("live", frozenset({"GET", "HEAD"}), re.compile(r"^/v2/health/live$")),
    ("ready", frozenset({"GET", "HEAD"}), re.compile(r"^/v2/health/ready$")),
    ("model metadata", frozenset({"GET", "HEAD"}), re.compile(rf"^/v2/models/{_NAME}(/versions/{_NAME})?$")),
    ("model ready", frozenset({"GET", "HEAD"}), re.compile(rf"^/v2/models/{_NAME}(/versions/{_NAME})?/ready$")),
    ("infer", frozenset({"POST"}), INFER_PATH),
)
METHOD_NOT_ALLOWED = "method not allowed"


def match(method: str, path: str) -> str | None:
    """The route's name, :data:`METHOD_NOT_ALLOWED` for a known path with another method, or None.

    >>> match("POST", "/v2/models/digits/infer"), match("GET", "/v2/models/digits/infer") == METHOD_NOT_ALLOWED
    ('infer', True)
    >>> match("POST", "/v2/repository/models/digits/unload") is None  # not public: the sidecar never forwards it
    True
    """
    known_path = False
    for name, methods, pattern in ROUTES:
        if pattern.match(path):
            if method in methods:
                return name
            known_path = True
    return METHOD_NOT_ALLOWED if known_path else None
