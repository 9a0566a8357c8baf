"""The operator CLI, ``sdcadm``: thin click commands over the library.

``main.py`` holds the top-level group and the registry of subcommands;
``output.py`` the shared output flags and renderer; ``context.py`` the
per-invocation config/store/catalog. One module per command group.
"""
