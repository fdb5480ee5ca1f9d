"""How pruneops's HTTP receivers authenticate a caller: MLflow webhook signatures (the pipeline
trigger and the model server) and bearer tokens (the rollout controller and the drift service).

MLflow signs ``X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>``
and sends ``X-MLflow-Timestamp`` and ``X-MLflow-Delivery-Id``.

>>> sign("secret", "d1", "1700000000", b'{"a": 1}')
'v1,a6H6hbbrMljFhQoCEGh+3DUc1nt7GJ1ZUeydTgWFZ0Q='
>>> check({}, b"", "secret", 300)
'missing X-MLflow-Signature, X-MLflow-Timestamp or X-MLflow-Delivery-Id header'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE, TIMESTAMP, DELIVERY = "X-MLflow-Signature", "X-MLflow-Timestamp", "X-MLflow-Delivery-Id"
#: The environment variable holding the shared webhook secret (trigger and model server).
SECRET_ENV = "PRUNEOPS_WEBHOOK_SECRET"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature of one delivery.

    >>> sign("secret", "delivery-1", "1700000000", b"{}")
    'v1,...'
    """
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def check(headers: Mapping[str, str], body: bytes, secret: str, max_skew_s: float) -> str | None:
    """Why a delivery must be refused with 401 (a sentence), or None when it is authentic and fresh.

    >>> now = str(int(time.time()))
    >>> headers = {SIGNATURE: sign("secret", "d1", now, b"{}"), TIMESTAMP: now, DELIVERY: "d1"}
    >>> check(headers, b"{}", "secret", max_skew_s=300) is None
    True
    >>> check(headers, b'{"forged": 1}', "secret", max_skew_s=300)
    'signature does not match'
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature, timestamp, delivery = (lowered.get(h.lower()) for h in (SIGNATURE, TIMESTAMP, DELIVERY))
    if not signature or not timestamp or not delivery:
        return f"missing {SIGNATURE}, {TIMESTAMP} or {DELIVERY} header"
    if not hmac.compare_digest(signature, sign(secret, delivery, timestamp, body)):
        return "signature does not match"
    try:
        skew = abs(time.time() - int(timestamp))
    except ValueError:
        return f"{TIMESTAMP} is not a unix time"
    if skew > max_skew_s:
        return f"delivery is {skew:.0f}s old (limit {max_skew_s:.0f}s)"
    return None


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    """Whether the request's ``Authorization: Bearer ...`` is ``token`` (compared in constant time).

    ``headers`` as the web framework gives them (Starlette's are case-insensitive).

    >>> bearer_matches({"authorization": "Bearer t0ken"}, "t0ken"), bearer_matches({}, "t0ken")
    (True, False)
    >>> bearer_matches({"authorization": "Bearer t0k"}, "t0ken")
    False
    """
    given = headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


class SeenDeliveries:
    """Delivery ids already accepted, so a replayed signed delivery is refused (409) within its freshness window.

    In memory and bounded (the newest ``keep``); a signature is only fresh for minutes, so
    this covers every replay that :func:`check` would otherwise let through. The trigger keeps
    its own on disk, because it also remembers which runs it started.

    >>> seen = SeenDeliveries()
    >>> seen.claim("d-1"), seen.claim("d-1")
    (True, False)
    """

    def __init__(self, keep: int = 10_000) -> None:
        import threading
        from collections import OrderedDict

        self._ids: OrderedDict[str, None] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def claim(self, delivery_id: str) -> bool:
        """True the first time ``delivery_id`` is seen, False after."""
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            while len(self._ids) > self._keep:
                self._ids.popitem(last=False)
            return True
