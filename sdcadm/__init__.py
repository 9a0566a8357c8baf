"""sdcadm: headnode resilience and recovery for a datacenter control plane."""

__version__ = "0.1.0"
