"""KFP components, one folder per pipeline step; each is a thin wrapper over ``pruneops.steps``.

``BASE_IMAGE`` is the image every component runs in on a cluster: ``$PRUNEOPS_IMAGE`` at
compile time, else the project's image for this version (``Dockerfile``). ``GPU_IMAGE`` is
the CUDA variant (``Dockerfile.gpu``) that the GPU pipeline's validate step runs in:
``$PRUNEOPS_GPU_IMAGE``, else ``BASE_IMAGE`` with ``-gpu`` appended to the tag. The Helm
chart's ``image`` values name the same images (a test keeps them equal).

>>> BASE_IMAGE.split(":")[-1] == __import__("pruneops").__version__ or "PRUNEOPS_IMAGE" in __import__("os").environ
True
"""

import os

from pruneops import __version__

BASE_IMAGE = os.environ.get("PRUNEOPS_IMAGE", f"ghcr.io/pruneops/pruneops:{__version__}")
GPU_IMAGE = os.environ.get("PRUNEOPS_GPU_IMAGE", f"{BASE_IMAGE}-gpu")
