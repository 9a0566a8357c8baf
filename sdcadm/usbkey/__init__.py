"""USB key / boot media helpers for headnodes.

The headnode bundle (``bundle.py``): built, sent and seeded by `server headnode-setup`.
"""
