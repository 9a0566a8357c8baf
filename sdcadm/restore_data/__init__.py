"""Restore data: the per-headnode copy of what rebuilds every non-HA instance
(DESIGN section 4; docs/restore-data.md).

``puller`` pulls (one sync cycle), ``runner`` schedules it in the agent,
``verify`` proves a copy restores, ``access`` reads a copy back for
`service restore`; ``layout``, ``manifest``, ``commit``, ``plan`` and ``tree``
are the pieces they share.
"""
