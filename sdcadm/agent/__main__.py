"""``python -m sdcadm.agent`` is ``sdcadm-agent``."""

import sys

from sdcadm.agent.main import main

sys.exit(main())
