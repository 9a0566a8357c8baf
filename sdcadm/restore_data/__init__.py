"""Restore data: the per-headnode copy of what rebuilds every non-HA instance.

Not built yet: the puller lands with the restore-data issue (DESIGN section 4).
"""
