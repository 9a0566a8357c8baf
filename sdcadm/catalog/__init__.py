"""The core-services catalog: which services exist and how they behave.

The catalog is data (``core-services.yaml``); this module loads and checks it
and answers ordering questions. Startup order is the topological order of
``depends_on`` (ties broken by catalog order, so the result is stable);
shutdown order is its reverse.
"""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sdcadm.errors import CatalogError, NotFound

DEFAULT_CATALOG = "core-services.yaml"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    ha: bool
    delegate_dataset: bool
    critical: bool
    singleton: bool
    depends_on: tuple = ()
    migrate_policy: str = "normal"
    health_path: str = "/ping"
    health_timeout: float = 2.0
    lab: bool = True
    description: str = ""


@dataclass
class Catalog:
    services: dict = field(default_factory=dict)  # name -> ServiceSpec, in file order

    def get(self, name):
        try:
            return self.services[name]
        except KeyError:
            raise NotFound(
                f"unknown service {name!r}",
                hint="known services: " + ", ".join(self.services),
            ) from None

    def names(self):
        return list(self.services)

    def startup_order(self, names=None):
        return startup_order(self.services, names)

    def shutdown_order(self, names=None):
        return list(reversed(startup_order(self.services, names)))


def parse_catalog(doc, source="<catalog>"):
    """Build a Catalog from a parsed YAML document; raise on any problem."""
    from sdcadm.schemas import validate

    validate("catalog", doc, source)
    services, problems = {}, []
    for entry in doc["services"]:
        if entry["name"] in services:
            problems.append(f"service {entry['name']!r} is listed twice")
            continue
        health = entry["health"]
        services[entry["name"]] = ServiceSpec(
            name=entry["name"], ha=entry["ha"], delegate_dataset=entry["delegate_dataset"],
            critical=entry["critical"], singleton=entry["singleton"],
            depends_on=tuple(entry["depends_on"]), migrate_policy=entry["migrate"]["policy"],
            health_path=health.get("path", "/ping"), health_timeout=health.get("timeout", 2.0),
            lab=entry.get("lab", True), description=entry.get("description", ""),
        )
    for spec in services.values():
        for dep in spec.depends_on:
            if dep not in services:
                problems.append(f"service {spec.name!r} depends on unknown service {dep!r}")
            elif dep == spec.name:
                problems.append(f"service {spec.name!r} depends on itself")
        if spec.ha and spec.singleton:
            problems.append(f"service {spec.name!r} cannot be both ha and singleton")
    if problems:
        raise CatalogError(f"invalid catalog {source}:\n" + "\n".join(f"  - {p}" for p in problems))
    startup_order(services)  # raises on a cycle
    return Catalog(services)


def load_catalog(path=None):
    """Load the catalog at ``path`` (default: the packaged core-services catalog)."""
    import yaml

    if path is None:
        source = f"<package>/{DEFAULT_CATALOG}"
        text = resources.files(__name__).joinpath(DEFAULT_CATALOG).read_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise CatalogError(f"cannot read catalog {path}: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CatalogError(f"catalog {source} is not valid YAML: {e}") from None
    return parse_catalog(doc, source)


def startup_order(services, names=None):
    """Topological order of ``depends_on`` over ``services`` (name -> spec).

    With ``names``, only those services are returned, still in an order that
    respects the dependencies among all services. A cycle raises CatalogError
    naming the services on it.
    """
    state, order = {}, []  # state: 1 visiting, 2 done

    def visit(name, path):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise CatalogError("dependency cycle in catalog: " + " -> ".join(cycle),
                               hint="remove one of these depends_on entries")
        state[name] = 1
        for dep in services[name].depends_on:
            if dep in services:
                visit(dep, path + [name])
        state[name] = 2
        order.append(name)

    for name in services:
        visit(name, [])
    if names is None:
        return order
    wanted = set(names)
    unknown = wanted - set(services)
    if unknown:
        raise NotFound(f"unknown service(s): {', '.join(sorted(unknown))}",
                       hint="known services: " + ", ".join(services))
    return [n for n in order if n in wanted]
