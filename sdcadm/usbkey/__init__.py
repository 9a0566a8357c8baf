"""USB key / boot media helpers for headnodes.

Not built yet: needed by `server headnode-setup` (a later issue).
"""
