"""pruneops: prune neural networks, prove the speedup on the target, serve and watch the result.

The core library. Heavy optional dependencies (mlflow, onnxruntime, kfp) are imported only
by the modules that need them, so ``pruneops.pruning`` and ``pruneops.bench`` run on a bare
machine that has only torch and numpy.

>>> import pruneops
>>> pruneops.__version__
'0.1.0'
"""

__version__ = "0.1.0"
