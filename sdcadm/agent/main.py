"""``sdcadm-agent``: the per-server daemon (see ``sdcadm.agent``)."""

import argparse
import sys

from sdcadm import __version__
from sdcadm.config import DEFAULT_PATH, ENV_PATH, load_config
from sdcadm.errors import SdcadmError


def parser():
    p = argparse.ArgumentParser(
        prog="sdcadm-agent",
        description="The sdcadm agent: heartbeats into the DC store, runs the instances the "
                    "store assigns to this server, and serves an HTTP API with bearer-token "
                    "auth. Runs in the foreground and logs JSON lines to stderr; SIGTERM or "
                    "SIGINT stops it (exit 0) and leaves the instances running.")
    p.add_argument("--config", metavar="PATH",
                   help=f"configuration file (default: ${ENV_PATH} or {DEFAULT_PATH})")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from sdcadm.agent.daemon import Agent
    from sdcadm.agent.log import setup_logging

    try:
        config = load_config(args.config)
        agent = Agent.from_config(config)
    except SdcadmError as e:
        print(f"sdcadm-agent: {e}", file=sys.stderr)
        return e.exit_code
    setup_logging(config.server_uuid)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
