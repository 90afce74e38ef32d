"""pgfleet's benchmark suite: pgbench through direct connections, PgBouncer, PgBouncer +
HAProxy and pgfleet, side by side on one machine (`bench/run`), and PostgreSQL's own
regression suite through pgfleet and PgBouncer (`bench/regress`)."""
