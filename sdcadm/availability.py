"""Availability from probe samples: pure folding, shared by `lab watch`, the
drill and procedures that measure the downtime they cause."""

from dataclasses import dataclass, field


@dataclass
class ServiceAvailability:
    probes: int = 0
    failed: int = 0
    outages: list = field(default_factory=list)  # [(start, end)]

    @property
    def downtime(self):
        return sum((end - start for start, end in self.outages), 0.0)

    @property
    def longest(self):
        return max((end - start for start, end in self.outages), default=0.0)

    def to_dict(self):
        return {"probes": self.probes, "failed": self.failed,
                "downtime_s": round(self.downtime, 3), "longest_outage_s": round(self.longest, 3),
                "outages": len(self.outages)}


def fold_outages(samples, end=None, services=()):
    """Fold ``(timestamp, service, ok)`` samples into {service: ServiceAvailability}.

    Samples are taken in timestamp order (ties keep their given order). An
    outage runs from a service's first failed sample to its next successful
    sample; one still open at the end closes at ``end`` (default: the latest
    timestamp seen). ``services``: names reported even without samples.
    """
    ordered = sorted(samples, key=lambda s: s[0])
    stats = {name: ServiceAvailability() for name in services}
    down_since = {}
    last = None
    for ts, service, ok in ordered:
        last = ts
        st = stats.setdefault(service, ServiceAvailability())
        st.probes += 1
        if ok:
            if service in down_since:
                st.outages.append((down_since.pop(service), ts))
        else:
            st.failed += 1
            down_since.setdefault(service, ts)
    end = end if end is not None else last
    for service, start in down_since.items():
        stats[service].outages.append((start, max(start, end)))
    return stats
