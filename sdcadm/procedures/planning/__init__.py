"""Pure planning for `service migrate` and `service restore`.

Plain functions over plain data (model records, the catalog, small frozen
dataclasses of facts); the procedures gather the facts through their
``ProcedureContext`` and carry out what these decide. Unit-tested without a
store, an agent or a clock (tests/unit/test_procedures_planning.py).

* ``common``: service selection, aliases, dead or not, addresses owned;
* ``restore_plan``: which servers, instances and levels a restore covers;
* ``fence_plan``: how a server named with --dead is proven powered off;
* ``migrate_plan``: which instances move, which are skipped, the new ones;
* ``freshest``: which headnode's copy a restore seeds from, and the RPO limit.
"""

from sdcadm.procedures.planning.common import (
    NotViable,
    dead_after,
    heartbeat_silent,
    ip_owned_by,
    is_dead,
    next_free_alias,
    select_services,
)
from sdcadm.procedures.planning.fence_plan import (
    FenceMethod,
    fence_argv,
    fence_failure,
    fence_methods,
    fence_summary,
)
from sdcadm.procedures.planning.freshest import (
    CopyChoice,
    PeerCopy,
    PeerHoldings,
    check_data_age,
    choose_copy,
    freshest_summary,
    read_holdings,
    too_old,
    unreachable,
)
from sdcadm.procedures.planning.migrate_plan import (
    InstanceMove,
    MigrateFacts,
    MigrateItem,
    MigratePlan,
    check_migrate_servers,
    migrate_method,
    migrate_summary,
    migrated_instance,
    new_uuid_for,
    plan_migrate,
    plan_migration,
)
from sdcadm.procedures.planning.restore_plan import (
    REFUSED_HINT,
    CopyFacts,
    FinishMigrate,
    InstanceToRestore,
    RestoreFacts,
    RestoreItem,
    RestorePlan,
    RestoreRequest,
    RestoreScope,
    RefusedCopy,
    addresses_to_take_over,
    check_restorable_servers,
    check_restore_host,
    copy_problem,
    interrupted_migrates,
    level_parts,
    level_targets,
    plan_restore,
    plan_restore_run,
    refused_error,
    replacement_of,
    restore_levels,
    restore_scope,
    restore_summary,
    restored_params,
    restored_result,
)

__all__ = [
    "FenceMethod", "FinishMigrate", "fence_argv", "fence_failure", "fence_methods",
    "fence_summary", "interrupted_migrates", "replacement_of",
    "CopyChoice", "PeerCopy", "PeerHoldings", "check_data_age", "choose_copy",
    "freshest_summary", "read_holdings", "too_old", "unreachable",
    "CopyFacts", "InstanceMove", "InstanceToRestore", "MigrateFacts",
    "MigrateItem", "MigratePlan", "NotViable", "REFUSED_HINT", "RefusedCopy", "RestoreFacts",
    "RestoreItem", "RestorePlan", "RestoreRequest", "RestoreScope", "addresses_to_take_over",
    "check_migrate_servers", "check_restorable_servers", "check_restore_host", "copy_problem",
    "dead_after", "heartbeat_silent", "ip_owned_by", "is_dead", "level_parts", "level_targets", "migrate_method",
    "migrate_summary", "migrated_instance", "new_uuid_for", "next_free_alias", "plan_migrate",
    "plan_migration", "plan_restore", "plan_restore_run", "refused_error", "restore_levels",
    "restore_scope", "restore_summary", "restored_params", "restored_result",
    "select_services",
]
