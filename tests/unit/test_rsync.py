"""rsync: the nothing-changed gate (pure parts)."""



def test_gate_says_unchanged_only_for_the_known_fingerprint():
    from sdcadm.transport.rsync import parse_gate
    fp, other = "a" * 64, "b" * 64
    assert parse_gate(f"sdcadm-unchanged {fp}\n", fp) == (True, None)
    assert parse_gate(f"sdcadm-unchanged {other}\n", fp) == (False, None)
    assert parse_gate(f"sdcadm-unchanged {fp}\n", None) == (False, None)
    assert parse_gate(f"noise\nsdcadm-fingerprint {other}\nrsync: x\n", fp) == (False, other)
    assert parse_gate("sdcadm-fingerprint short\n", fp) == (False, None)


def test_gate_rsync_path_passes_values_as_parameters():
    import shlex
    from sdcadm.transport.rsync import GATE_SCRIPT, gate_rsync_path
    argv = shlex.split(gate_rsync_path("/data/it's; rm -rf /", "f" * 64, 2))
    assert argv == ["sh", "-c", GATE_SCRIPT, "sdcadm-gate", "f" * 64, "/data/it's; rm -rf /", "2"]
