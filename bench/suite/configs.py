"""Configuration files of the proxies under test. The PgBouncer and HAProxy settings
are those of /work/shared/lab/peers.sh (the "blog stack"), with the differences noted."""

from .cluster import CHECK_USER, DATABASE, MD5_USER, SCRAM_USER


def userlist(cluster):
    """PgBouncer-format auth_file, read by PgBouncer and pgfleet alike: the secrets
    PostgreSQL stores, and the health-check user's plaintext password for pgfleet."""
    return "".join(f'"{u}" "{s}"\n' for u, s in (
        (SCRAM_USER, cluster.secret(SCRAM_USER)),
        (MD5_USER, cluster.secret(MD5_USER)),
        (CHECK_USER, CHECK_USER)))


def pgbouncer_ini(workdir, port, upstream_port, pool_mode, pool_size, max_clients):
    # auth_type md5: users with a SCRAM secret get SCRAM, users with an md5 one md5.
    return f"""[databases]
{DATABASE} = host=127.0.0.1 port={upstream_port} dbname={DATABASE}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {workdir}/userlist.txt
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = {max_clients}
server_check_query = select 1
server_check_delay = 30
server_lifetime = 3600
server_idle_timeout = 600
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""


def pgcheck_sh(bindir):
    """HAProxy's external check (lab pgcheck.sh): UP only if the node is in recovery."""
    return f"""#!/bin/sh
# $1 proxy_addr  $2 proxy_port  $3 server_addr  $4 server_port
r=$(PGPASSWORD={CHECK_USER} PGCONNECT_TIMEOUT=2 {bindir}/psql -X -At \\
      -h "$3" -p "$4" -U {CHECK_USER} -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)
[ "$r" = t ]
"""


def haproxy_cfg(workdir, port, ports):
    # As the lab's, except: maxconn 4096 (the lab's 2000 would cap the session-mode
    # stack below the idle-client workload's 2,016 sessions) and the stats on a unix
    # socket instead of an HTTP port.
    return f"""global
    maxconn 4096
    external-check
    insecure-fork-wanted
    stats socket {workdir}/haproxy.sock mode 600 level user
defaults
    mode tcp
    retries 2
    timeout connect 4s
    timeout client 30m
    timeout server 30m
    timeout check 5s
listen readers
    bind 127.0.0.1:{port}
    balance leastconn
    option external-check
    external-check path "/usr/bin:/bin"
    external-check command {workdir}/pgcheck.sh
    default-server inter 2s fall 2 rise 1 on-marked-down shutdown-sessions
    server replica1 127.0.0.1:{ports['replica1']} check
    server replica2 127.0.0.1:{ports['replica2']} check
    server primary  127.0.0.1:{ports['primary']} check
"""


def pgfleet_toml(port, ports, pool_mode, pool_size,
                 nodes=("primary", "replica1", "replica2"), extra=""):
    hosts = ", ".join(f'"127.0.0.1:{ports[n]}"' for n in nodes)
    return f"""[general]
auth_file = "userlist.txt"
auth_type = "md5"
log_connections = false
{extra}
[clusters.bench]
hosts = [{hosts}]
health_user = "{CHECK_USER}"

[clusters.bench.pool]
pool_mode = "{pool_mode}"
default_pool_size = {pool_size}

[clusters.bench.endpoints.reader]
listen = "127.0.0.1:{port}"
role = "replica"
"""
