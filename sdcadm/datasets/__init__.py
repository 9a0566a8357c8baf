"""Delegate datasets (zfs and plain-directory backends).

Not built yet: lands with the restore-data issue (DESIGN section 4).
"""
