"""The KFP pipeline (``prune_and_register``, compiled IR in ``compiled/``), its runners (``runner``:
``kfp.local`` here, a KFP API server with ``cluster``), KFP's log handling (``kfplog``) and the
trigger that starts a run when a model version appears (``trigger``).

Installed as ``pruneops.pipelines`` from the repository's ``pipelines/`` folder; needs the
``pipeline`` extra.
"""
