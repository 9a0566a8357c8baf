"""Transports: how sdcadm runs things on this and other servers.

``interface`` holds what every shell shares (``Shell``, ``Result``, argv
checks); ``local`` and ``ssh`` implement it (this machine; another server over
SSH, host keys verified against a known_hosts file and never auto-accepted);
``zfs`` and ``rsync`` drive those tools through a shell.
"""
