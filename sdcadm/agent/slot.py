"""The agent's record of one instance on this server.

The supervisor keeps one ``Slot`` per instance it knows of; the actions
(``actions.py``) change them; ``view()`` gives the pure planner
(``plan.py``) the plain facts it decides on.
"""

from sdcadm.agent import provision
from sdcadm.agent.plan import LocalInstance, runtime_key


class Slot:
    """What the agent holds for one instance: payload, process, state, backoff."""

    def __init__(self, uuid):
        self.uuid = uuid
        self.payload = None        # the payload it is provisioned from (None: not provisioned)
        self.instance = None       # the Instance last seen (payload's, then the store's)
        self.proc = None           # InstanceProcess when it is our running child
        self.stale_pid = None      # a previous agent's process still running it
        self.state = "provisioning"
        self.error = None
        self.failure = None        # the event of the last failure (e.g. restore-data-refused)
        self.restarts = 0
        self.failures = 0          # consecutive failed starts / deaths (backoff)
        self.not_before = 0.0
        self.restart_pending = False
        self.staged_until = None   # provisioned ahead of its move here (plan.LocalInstance)
        self.spawned_at = None     # wall clock of its last process start (time.time())

    @property
    def pid(self):
        return self.proc.pid if self.proc else self.stale_pid

    @property
    def name(self):
        """``alias (uuid)``, for log lines."""
        alias = self.instance.alias if self.instance else "?"
        return f"{alias} ({self.uuid})"

    def view(self):
        payload_instance = provision.instance_of(self.payload) if self.payload else None
        return LocalInstance(
            uuid=self.uuid,
            generation=payload_instance.generation if payload_instance else 0,
            spec=runtime_key(payload_instance) if payload_instance else None,
            alive=self.pid is not None,
            child=self.proc is not None,
            state=self.state,
            not_before=self.not_before,
            staged_until=self.staged_until,
        )
