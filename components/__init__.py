"""KFP components, one folder per pipeline step; each is a thin wrapper over ``pruneops.steps``.

``BASE_IMAGE`` is the image every component runs in on a cluster: ``$PRUNEOPS_IMAGE`` at
compile time, else the project's image for this version.

>>> BASE_IMAGE.split(":")[-1] == __import__("pruneops").__version__ or "PRUNEOPS_IMAGE" in __import__("os").environ
True
"""

import os

from pruneops import __version__

BASE_IMAGE = os.environ.get("PRUNEOPS_IMAGE", f"ghcr.io/pruneops/pruneops:{__version__}")
