"""Sources of the lab workload (run inside instances, stdlib only)."""
