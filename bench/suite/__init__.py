"""pgfleet's benchmark suite: pgbench through direct connections, PgBouncer, PgBouncer +
HAProxy and pgfleet, side by side on one machine. `bench/run` is the entry point."""
