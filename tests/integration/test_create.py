"""`sdcadm create` on a real lab: the new instance answers from its server;
the same command again makes nothing more; what must run once, or once per
server, is refused and nothing changes. `post-setup ha-*` adds only the
peers that are missing, and keeps binder's ensemble odd."""

import json

import pytest

from sdcadm.health import probe
from tests.conftest import env_of, needs_sshd, run, running_lab

pytestmark = [pytest.mark.integration, needs_sshd]


def insts(directory):
    out = run("sdcadm", "insts", "-j", env=env_of(directory, "hn0")).stdout
    return {i["alias"]: i for i in json.loads(out)}


def sdcadm(directory, *argv):
    return run("sdcadm", *argv, env=env_of(directory, "hn0"), check=False)


def test_create_then_again_then_refusals(tmp_path):
    directory = tmp_path / "dc"
    with running_lab(directory, "--headnodes", "3", "--computenodes", "1", "--services",
                     "sapi,assets,binder,moray", "--heartbeat-interval", "0.5"):
        before = insts(directory)
        made = sdcadm(directory, "create", "assets", "--server", "hn1", "-y")
        assert made.returncode == 0, made.stderr
        after = insts(directory)
        new = after["assets1"]
        assert set(after) - set(before) == {"assets1"} and new["hostname"] == "hn1"
        assert probe(new["url"] + "/ping") is None  # answers, from outside
        again = sdcadm(directory, "create", "assets", "--server", "hn1", "-y")
        assert again.returncode == 0, again.stderr
        assert insts(directory) == after
        # `lab up` made binder0 with this very command: running it again waits only
        lab_made = sdcadm(directory, "create", "binder", "--server", "hn0", "-y")
        assert lab_made.returncode == 0 and "wait for binder0" in lab_made.stderr
        assert insts(directory) == after
        for argv, reason in ((["sapi", "--server", "hn1"], "runs once"),
                             (["binder", "--server", "hn0", "--alias", "binder7"],
                              "distinct servers"),
                             (["assets", "--server", "hn9"], "no server")):
            refused = sdcadm(directory, "create", *argv, "-y")
            assert refused.returncode != 0 and reason in refused.stderr, refused.stderr
        assert insts(directory) == after

        # post-setup: binder already runs on the three headnodes: nothing to do;
        # a fourth binder is refused (an ensemble of 1, 3 or 5 keeps a majority);
        # moray on cn0 too is added, and answers.
        done = sdcadm(directory, "post-setup", "ha-binder", "-y")
        assert done.returncode == 0 and "nothing to do" in done.stdout.lower(), done.stderr
        even = sdcadm(directory, "post-setup", "ha-binder", "cn0", "-y")
        assert even.returncode != 0 and "binder would run 4" in even.stderr, even.stderr
        assert insts(directory) == after
        grown = sdcadm(directory, "post-setup", "ha-moray", "cn0", "-y")
        assert grown.returncode == 0, grown.stderr
        morays = {a: i for a, i in insts(directory).items() if i["service"] == "moray"}
        assert sorted(i["hostname"] for i in morays.values()) == ["cn0", "hn0", "hn1", "hn2"]
        (added,) = [i for i in morays.values() if i["hostname"] == "cn0"]
        assert probe(added["url"] + "/ping") is None
        # cn0 had no image of moray: its agent fetched it from a headnode's agent.
        log = (directory / "cn0" / "var" / "log" / "sdcadm-agent.log").read_text()
        assert '"image-fetched"' in log and '"peer": "hn' in log

        # Several services at once: one refused refuses them all, nothing made;
        # --alias names one instance; then both made, started together.
        before = insts(directory)
        refused = sdcadm(directory, "create", "assets", "sapi", "--server", "cn0", "-y")
        assert refused.returncode == 1 and "runs once" in refused.stderr, refused.stderr
        aliased = sdcadm(directory, "create", "assets", "binder", "--server", "cn0", "--alias",
                         "x1", "-y")
        assert aliased.returncode == 2 and "one service" in aliased.stderr, aliased.stderr
        assert insts(directory) == before
        both = sdcadm(directory, "create", "assets", "binder", "--server", "cn0", "-y")
        assert both.returncode == 0, both.stderr
        new = {a: i for a, i in insts(directory).items() if a not in before}
        assert sorted(new) == ["assets2", "binder3"], sorted(new)
        assert all(i["hostname"] == "cn0" and probe(i["url"] + "/ping") is None
                   for i in new.values())
