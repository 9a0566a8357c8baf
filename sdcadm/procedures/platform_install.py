"""``sdcadm platform install VERSION [--from FILE]``: a platform on every headnode's usbkey.

A headnode boots the other servers, so every headnode keeps every platform
they may boot (docs/usbkey.md). Viability first, changing nothing:

* VERSION is a platform version (``usbkey/platform.check_version``);
* with ``--from FILE``: the file checks out (a gzip'd tar of regular files
  and directories with safe names, bounded: ``usbkey/platform.check_file``)
  and, named ``platform-X.tgz``, X is VERSION; without it, this headnode
  already holds VERSION, intact;
* every other headnode of the DC store (flag H) is asked over SSH (host
  keys checked) which copy of VERSION it holds (``sdcadm platform held
  --verify`` run there: its sha256 read from the file itself). The plan
  (``planning/platform_plan.py``) says for each: already there (untouched),
  send (missing or damaged), another file under that version (refused), or
  unreachable (refused unless ``--skip-unreachable``).

Then, each step idempotent (a failed run finishes by running the same
command again, which resumes its Task):

1. add it to this headnode's usbkey (when ``--from`` brings it);
2. for each headnode that needs it: push the file over SSH beside its usbkey
   (``transport/push.py``: its sha256 compared there), add it there with
   ``sdcadm platform add --sha256`` (checked again, written atomically),
   remove the pushed file, and read the result back from that usbkey,
   sha256 included.
"""

from pathlib import Path

from sdcadm.errors import SdcadmError
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.common import NotViable
from sdcadm.procedures.planning.platform_plan import plan_platform, refusal
from sdcadm.procedures.platforms import ask_headnodes, remote_held, remote_usbkey, \
    this_hostname

SEND_TIMEOUT = 1800.0   # a platform is ~0.5 GiB; hashing it twice there included


class PlatformInstallFailed(SdcadmError):
    """A headnode did not end up holding the platform."""


class PlatformInstall(Procedure):
    name = "platform-install"

    def __init__(self, version, source=None, skip_unreachable=False, transport_for=None,
                 remote_sdcadm=None):
        self.version, self.source = version, source
        self.skip_unreachable = skip_unreachable
        self._transport_for = transport_for   # server -> transport (tests); default: ssh.*
        self._remote_sdcadm = remote_sdcadm
        self.plan = None

    def key(self):
        return self.version

    # -- viability -------------------------------------------------------------------
    def prepare(self, ctx):
        from sdcadm.usbkey.platform import check_file, check_version, conflict, held, \
            version_in_name

        check_version(self.version)
        config = ctx.config
        servers = ctx.store.list_servers()
        self.here = this_hostname(config, servers)
        self.usbkey = Path(config.under_root(config.usbkey_dir))
        if not self.usbkey.is_dir():
            raise NotViable(f"{self.here} has no usbkey directory ({self.usbkey}): platforms "
                            "are kept on headnodes' usbkeys",
                            hint="run it on a headnode (usbkey_dir in its configuration)")
        mine = held(self.usbkey, [self.version], verify=True)[0]
        if self.source is not None:
            named = version_in_name(self.source)
            if named is not None and named != self.version:
                raise NotViable(f"{self.source} is named for platform {named}, not "
                                f"{self.version}",
                                hint=f"install it as {named}, or check which file you meant")
            checked = check_file(self.source)
            sha, size = checked["sha256"], checked["size"]
            if mine["state"] == "ok" and mine["sha256"] != sha:
                raise conflict(self.usbkey / "platforms" / self.version, mine["sha256"], sha)
            self.local = "present" if mine["state"] == "ok" else mine["state"]
        else:
            if mine["state"] != "ok":
                damaged = f" (its copy is damaged: {mine['problem']})" if mine["problem"] else ""
                raise NotViable(f"{self.here} does not hold platform {self.version}{damaged}",
                                hint=f"give the file: sdcadm platform install {self.version} "
                                     f"--from platform-{self.version}.tgz")
            sha, size = mine["sha256"], mine["size"]
            self.local = "present"
        self._servers = {s.hostname: s for s in servers
                         if s.headnode and s.uuid != config.server_uuid}
        answers = ask_headnodes(config, list(self._servers.values()), self._transport(ctx),
                                self._remote(), [self.version], verify=True)
        answers = {h: a if isinstance(a, str) else _entry_of(a, self.version)
                   for h, a in answers.items()}
        self.plan = plan_platform(self.version, sha, size, answers)
        refused = refusal(self.plan, self.skip_unreachable)
        if refused is not None:
            raise refused
        if self.local == "present" and not self.plan.send:
            everywhere = ", ".join([self.here, *self.plan.present])
            skipped = "".join(f"; {h} unreachable, skipped" for h, _ in self.plan.unreachable)
            return self.mark_nothing_to_do(f"already there on every headnode ({everywhere}), "
                                           f"sha256 {sha[:16]}...{skipped}")
        return True

    def _transport(self, ctx):
        if self._transport_for is not None:
            return self._transport_for
        from sdcadm.restore_data.peer_copy import ssh_transport

        return lambda server: ssh_transport(ctx.config, server.admin_ip)

    def _remote(self):
        if self._remote_sdcadm is None:
            from sdcadm import sdcadm_program

            self._remote_sdcadm = sdcadm_program()
        return self._remote_sdcadm

    def summarize(self):
        p = self.plan
        lines = [f"platform {p.version}: {p.size} bytes, sha256 {p.sha256[:16]}..."]
        lines.append(f"{self.here} (here): " + {
            "present": "already there",
            "missing": f"add it to {self.usbkey} from {self.source}",
            "damaged": f"replace its damaged copy in {self.usbkey} from {self.source}",
        }[self.local])
        for host in p.send:
            what = "replace its damaged copy" if host in p.repair else "add it to its usbkey"
            lines.append(f"{host}: send it over SSH, check its sha256 there, {what}")
        lines += [f"{host}: already there" for host in p.present]
        lines += [f"{host}: UNREACHABLE, left without it (--skip-unreachable): {why}"
                  for host, why in p.unreachable]
        return lines

    def steps(self):
        steps = []
        if self.local != "present":
            steps.append(Step(f"add platform {self.version} to {self.here}'s usbkey",
                              self._add_here))
        for host in self.plan.send:
            server = self._servers[host]
            steps.append(Step(f"send platform {self.version} to {host}", self._send(server),
                              verify=self._holds(server)))
        return steps

    # -- steps -----------------------------------------------------------------------
    def _add_here(self, ctx):
        from sdcadm.usbkey.platform import add

        result = add(self.usbkey, self.version, self.source, sha256=self.plan.sha256)
        ctx.progress(f"{self.here}: platform {self.version} "
                     + ("added" if result["changed"] else "already there"))
        return result

    def _send(self, server):
        def send(ctx):
            from sdcadm.restore_data.sources import source_root
            from sdcadm.transport.push import push_file

            local = self.usbkey / "platforms" / self.version / "platform.tgz"
            pushed = Path(source_root(ctx.config, server)) / "var" / "sdcadm" / \
                f"platform-{self.version}.tgz"
            usbkey = remote_usbkey(ctx.config, server)
            with self._transport(ctx)(server) as t:
                sent = push_file(t, local, pushed, self.plan.sha256, mode="644",
                                 timeout=SEND_TIMEOUT)
                ctx.progress(f"{server.hostname}: {sent} bytes sent, sha256 checked there")
                try:
                    t.run([self._remote(), "platform", "add", self.version, str(pushed),
                           "--dir", str(usbkey), "--sha256", self.plan.sha256, "-j"],
                          timeout=SEND_TIMEOUT)
                finally:
                    t.run(["rm", "-f", str(pushed)], check=False)
            entry = self._read_back(ctx, server)
            ctx.progress(f"{server.hostname}: platform {self.version} on its usbkey, sha256 "
                         "verified there")
            return {"bytes": sent, "sha256": entry["sha256"], "usbkey": str(usbkey)}

        return send

    def _read_back(self, ctx, server):
        answer = remote_held(ctx.config, server, self._transport(ctx), self._remote(),
                             [self.version], verify=True)
        entry = answer if isinstance(answer, str) else _entry_of(answer, self.version)
        if isinstance(entry, str) or entry["state"] != "ok" or \
                entry["sha256"] != self.plan.sha256:
            said = entry if isinstance(entry, str) else f"{entry['state']}: {entry['problem']}"
            raise PlatformInstallFailed(
                f"{server.hostname} does not hold platform {self.version} after it was sent "
                f"({said})", hint="check that headnode's usbkey and free space, then run the "
                                  "same command again")
        return entry

    def _holds(self, server):
        def holds(ctx, previous):
            try:
                return bool(self._read_back(ctx, server))
            except PlatformInstallFailed:
                return False

        return holds

    def report(self, results):
        p = self.plan
        hosts = [self.here, *p.present, *p.send]
        lines = [f"platform {p.version} is on the usbkey of {', '.join(hosts)}"]
        lines += [f"{host} was unreachable and does not have it: run the same command again "
                  "once it is back" for host, _ in p.unreachable]
        return lines


def _entry_of(entries, version):
    """The entry of ``version`` in a headnode's answer, or an error text."""
    for e in entries:
        if e.get("version") == version:
            return e
    return f"its answer does not mention platform {version}"
