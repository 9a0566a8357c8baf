"""Transports: how sdcadm runs things on other servers.

``ssh`` runs argument lists over SSH (paramiko), with host keys verified
against a known_hosts file and never auto-accepted.
"""
