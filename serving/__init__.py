"""The serving pod: the V2 model server that follows a registry alias (``server``, ``app``,
``loader``, ``routes``, ``v2tensors``) and the sidecar proxy that measures it (``sidecar`` on
``http1``).

Installed as ``pruneops.serving`` from the repository's ``serving/`` folder; needs the
``serving`` extra.
"""
