"""The lab's images: one workload image per catalog service."""

import uuid as _uuid
from importlib import resources

from sdcadm.images import build_image

WORKLOAD = "workload.py"
LEASE_LIBRARY = "instance_lease.py"
# Image UUIDs are derived from name and version so a rebuilt lab reuses them.
_NS = _uuid.UUID("6a1c3f64-7c52-4c0e-9a53-8d6f0c1b2e77")


def image_uuid(name, version):
    return str(_uuid.uuid5(_NS, f"{name}@{version}"))


def workload_source():
    return resources.files("sdcadm.lab").joinpath("workload").joinpath(WORKLOAD).read_bytes()


def lease_library_source():
    """The instance lease library, shipped in every workload image next to
    workload.py: one standard-library file, as any service would vendor it."""
    return resources.files("sdcadm").joinpath("instance_lease.py").read_bytes()


def build_workload_image(out_dir, service, version="1.0.0"):
    """Build the workload image for ``service`` into ``out_dir``; return the Image."""
    manifest = {
        "name": service,
        "version": version,
        "command": ["python3", WORKLOAD],
        "health": {"path": "/ping"},
        "description": f"lab workload standing in for {service}",
    }
    files = {WORKLOAD: workload_source(), LEASE_LIBRARY: lease_library_source()}
    return build_image(out_dir, image_uuid(service, version), manifest, files)
