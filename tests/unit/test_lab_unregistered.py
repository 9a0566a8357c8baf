"""`lab up --unregistered N`: a bad N is refused before anything is made."""

import pytest

from sdcadm.errors import LabError
from sdcadm.lab import ctl


@pytest.mark.parametrize("n", [2, -1])
def test_more_unregistered_servers_than_compute_nodes_is_refused(tmp_path, n):
    with pytest.raises(LabError, match="compute node") as exc:
        ctl.create(tmp_path / "lab", "127.77.0.0/24", 1, 1, unregistered=n)
    assert exc.value.hint
    assert not (tmp_path / "lab").exists()
