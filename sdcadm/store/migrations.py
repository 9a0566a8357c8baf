"""Versioned schema of the SQLite store. Append; never edit a released step.

``PRAGMA user_version`` records how many steps a database has had.
"""

MIGRATIONS = [
    # 1: the DC model
    """
    CREATE TABLE servers (
        uuid TEXT PRIMARY KEY, hostname TEXT NOT NULL UNIQUE, admin_ip TEXT NOT NULL,
        headnode INTEGER NOT NULL DEFAULT 0, setup INTEGER NOT NULL DEFAULT 1,
        boot_platform TEXT NOT NULL DEFAULT '', current_platform TEXT NOT NULL DEFAULT '',
        last_heartbeat REAL NOT NULL DEFAULT 0, fenced INTEGER NOT NULL DEFAULT 0,
        agent_port INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE services (name TEXT PRIMARY KEY, image TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE instances (
        uuid TEXT PRIMARY KEY, alias TEXT NOT NULL UNIQUE, service TEXT NOT NULL,
        server_uuid TEXT NOT NULL, image TEXT NOT NULL, admin_ip TEXT NOT NULL,
        port INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL DEFAULT 1 CHECK (generation >= 1),
        delegate_dataset INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'provisioning',
        params TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX instances_by_service ON instances (service);
    CREATE INDEX instances_by_server ON instances (server_uuid);
    CREATE TABLE images (uuid TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
        sha256 TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0, origin TEXT);
    CREATE TABLE networks (name TEXT PRIMARY KEY, cidr TEXT NOT NULL,
        reservations TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE ip_allocations (network TEXT NOT NULL, ip TEXT NOT NULL, owner TEXT NOT NULL,
        PRIMARY KEY (network, ip));
    CREATE TABLE tasks (uuid TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL,
        created REAL NOT NULL, started REAL, finished REAL,
        steps TEXT NOT NULL DEFAULT '[]', error TEXT);
    CREATE INDEX tasks_by_created ON tasks (created);
    CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL,
        token INTEGER NOT NULL);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('revision', 0), ('lock_token', 0);
    """,
    # 2: restore-data status, one row per receiving headnode and pulled instance
    """
    CREATE TABLE restore_data_status (
        receiver TEXT NOT NULL, service TEXT NOT NULL, instance TEXT NOT NULL,
        alias TEXT NOT NULL DEFAULT '', source TEXT, snapshot TEXT, guid TEXT,
        bytes INTEGER NOT NULL DEFAULT 0, duration REAL NOT NULL DEFAULT 0,
        last_success REAL, last_attempt REAL NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'diverged', 'unreachable')),
        error TEXT,
        PRIMARY KEY (receiver, service, instance));
    """,
    # 3: compare-and-swap of servers (set_fenced) and networks (put_network)
    """
    ALTER TABLE servers ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE networks ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: files that vanished from a live source during the last good copy (a warning)
    """
    ALTER TABLE restore_data_status ADD COLUMN vanished INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: listings read instances in (service, alias) order: no sort of 50,000 rows
    """
    CREATE INDEX instances_by_service_alias ON instances (service, alias);
    """,
    # 6: released addresses quarantined before another owner may take them
    """
    ALTER TABLE networks ADD COLUMN quarantine TEXT NOT NULL DEFAULT '{}';
    """,
]
