"""sdcadm: headnode resilience and recovery for a datacenter control plane."""

__version__ = "0.1.0"


def sdcadm_program():
    """The ``sdcadm`` command beside this Python: where this sdcadm is
    installed, and where every server of the DC has it (they run sdcadm-agent
    from the same package), so also the one to run on another server."""
    import sys
    from pathlib import Path

    return str(Path(sys.executable).parent / "sdcadm")
