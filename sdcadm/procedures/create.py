"""``sdcadm create SERVICE... --server SERVER``: add instances of core services.

The planner (``planning/create_plan.py``) decides each alias, image and UUID;
the first steps register each service (when the store does not have it
yet), allocate an address and create the instance record, assigned to the
server; that server's agent then provisions and starts them (together); the
last steps wait until each answers its health check. Every step is
idempotent: a re-run finds each instance by its derived UUID and only waits.
One service that cannot be created refuses the whole run before anything
changes.
"""

from sdcadm.errors import Conflict, NotFound, UsageError
from sdcadm.model import ADMIN_NETWORK, Instance, Service
from sdcadm.procedures.base import Procedure, Step
from sdcadm.procedures.planning.common import NotViable, refuse_all
from sdcadm.procedures.planning.create_plan import choose_image, plan_create, plan_post_setup
from sdcadm.procedures.waits import wait_healthy

DEFAULT_TIMEOUT = 120.0


class CreateInstance(Procedure):
    name = "create"

    def __init__(self, services, server, alias=None, image=None, timeout=DEFAULT_TIMEOUT):
        self.services = ((services,) if isinstance(services, str)
                         else tuple(dict.fromkeys(services)))
        if len(self.services) > 1 and (alias or image):
            raise UsageError("--alias and --image name one instance: create one service with "
                             "them", hint=f"e.g. sdcadm create {self.services[0]} --server "
                                          f"{server} --alias ALIAS")
        self.server_ref = server
        self.alias, self.image = alias, image
        self.timeout = timeout
        self.plans = []

    def key(self):
        extra = f" --alias {self.alias}" if self.alias else ""
        return f"{' '.join(self.services)} --server {self.server_ref}{extra}"

    def prepare(self, ctx):
        store = ctx.store
        specs = [ctx.catalog.get(name) for name in self.services]
        server = store.find_server(self.server_ref)
        records = {r.name: r for r in store.list_services()}
        images, instances = store.list_images(), store.list_instances()
        plans, problems = [], []
        for spec in specs:
            try:
                image = choose_image(spec.name, records.get(spec.name), images, self.image)
                plans.append(plan_create(spec, server, instances, image, now=ctx.now(),
                                         heartbeat_timeout=ctx.config.agent.heartbeat_timeout,
                                         alias=self.alias))
            except NotViable as e:
                problems.append(e)
        refuse_all(problems)
        self.plans = plans
        return True

    def summarize(self):
        lines = []
        for p in self.plans:
            if p.existing is not None:
                lines.append(f"wait for {p.alias} ({p.uuid}), made by an earlier run, on "
                             f"{p.server.hostname}")
            else:
                lines.append(f"create {p.alias} ({p.service}, image {p.image.name} "
                             f"{p.image.version}) on {p.server.hostname}")
        return lines

    def steps(self):
        return create_steps(self.plans, self.timeout)

    def report(self, results):
        return created_lines(self.plans)


def create_steps(plans, timeout):
    """Every record first (the agent then starts them together), then a
    wait for each."""
    return ([Step(f"create {p.alias}", lambda ctx, p=p: create_record(ctx, p)) for p in plans]
            + [Step(f"wait for {p.alias}", lambda ctx, p=p: wait_created(ctx, p, timeout))
               for p in plans])


def created_lines(plans):
    return [f"{p.alias} ({p.service}) runs on {p.server.hostname}" for p in plans]


def create_record(ctx, p):
    """Register ``p``'s service if the store lacks it, allocate an address,
    create the instance record (assigned to ``p.server``) and wake its agent.
    Idempotent: an instance already made under ``p.uuid`` is left as it is."""
    store = ctx.store
    try:
        store.get_instance(p.uuid)
        return {"created": False}
    except NotFound:
        pass
    try:
        store.get_service(p.service)
    except NotFound:
        store.put_service(Service(p.service, p.image.uuid,
                                  {"ha": p.spec.ha, "delegate_dataset": p.spec.delegate_dataset}))
    ip = store.allocate_ip(ADMIN_NETWORK, p.uuid)
    try:
        store.create_instance(Instance(uuid=p.uuid, alias=p.alias, service=p.service,
                                       server_uuid=p.server.uuid, image=p.image.uuid,
                                       admin_ip=ip, port=ctx.config.agent.instance_port,
                                       delegate_dataset=p.spec.delegate_dataset))
    except Conflict:
        store.release_ip(ADMIN_NETWORK, ip)
        raise
    ctx.progress(f"{p.alias} assigned to {p.server.hostname} at {ip}")
    ctx.agents.wake(p.server.agent_url)
    return {"created": True, "ip": ip}


def wait_created(ctx, p, timeout):
    """Wait until ``p``'s instance answers its health check."""
    inst = ctx.store.get_instance(p.uuid)
    waited = wait_healthy(inst.url + p.spec.health_path, timeout,
                          f"{inst.alias} to answer at {inst.url}", probe=ctx.prober.probe)
    return {"alias": inst.alias, "url": inst.url, "waited_s": round(waited, 3)}


class PostSetupHa(Procedure):
    """``sdcadm post-setup ha-SERVICE [SERVER...]``: one peer on each server
    (default: every headnode), adding only what is missing."""

    name = "post-setup"

    def __init__(self, service, servers=(), timeout=DEFAULT_TIMEOUT):
        self.service, self.servers, self.timeout = service, tuple(servers), timeout
        self.plans = []

    def key(self):
        return " ".join((f"ha-{self.service}",) + self.servers)

    def prepare(self, ctx):
        store = ctx.store
        spec = ctx.catalog.get(self.service)
        try:
            record = store.get_service(self.service)
        except NotFound:
            record = None
        image = choose_image(self.service, record, store.list_images())
        self.plans = plan_post_setup(spec, store.list_servers(), store.list_instances(), image,
                                     self.servers, now=ctx.now(),
                                     heartbeat_timeout=ctx.config.agent.heartbeat_timeout)
        if not self.plans:
            return self.mark_nothing_to_do(f"{self.service} already runs on every server asked")
        return True

    def summarize(self):
        return [f"create {p.alias} ({p.service}) on {p.server.hostname}" for p in self.plans]

    def steps(self):
        return create_steps(self.plans, self.timeout)

    def report(self, results):
        return created_lines(self.plans)
