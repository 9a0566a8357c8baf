"""Restore data: the per-headnode copy of what rebuilds every non-HA instance
(DESIGN section 4; docs/restore-data.md).

``puller`` runs one sync cycle, composed of ``sources`` (what to pull and
from where), ``service_sync`` and ``instance_sync`` (one service, one
instance), ``staging`` (metadata into ``.pending/``), ``datasync`` (a delegate
dataset through the dataset backend), ``reporting`` (status rows and metrics)
and ``prune`` (copies of instances gone); ``scheduler`` runs cycles in the
agent and ``api`` serves on-demand ones; ``verify`` (with ``verify_files``)
proves a copy restores, ``access`` reads a copy back for `service restore`,
``client`` asks every headnode to sync. ``layout``, ``manifest``, ``commit``, ``plan``, ``files``
and ``events`` are the pieces they share.
"""
