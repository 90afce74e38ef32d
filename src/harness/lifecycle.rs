//! Creating the cluster and changing its nodes' states: start, replicas,
//! promotion, stop/kill/restart, pause/resume, rebuild.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::bins::PgBins;
use super::command::Runner;
use super::{conf, node, ports, process, NodeState, State, TestCluster};

/// How many fresh ports a new node tries when another process took its port
/// between our check and the server's bind.
const PORT_ATTEMPTS: usize = 5;

impl TestCluster {
    /// Starts a primary (node 0) and `replicas` streaming replicas (nodes
    /// `1..=replicas`) in a fresh `/tmp/pgfleet-test-*` directory, and returns
    /// once every replica is `streaming` in the primary's
    /// `pg_stat_replication`. Anything started is torn down on error.
    pub fn start(replicas: usize) -> anyhow::Result<TestCluster> {
        let t0 = Instant::now();
        let bins = PgBins::discover()?;
        let mut runner = Runner::detect()?;
        let tmp = tempfile::Builder::new()
            .prefix("pgfleet-test-")
            .tempdir_in("/tmp")
            .context("creating the test cluster directory")?;
        let root = tmp.path().to_path_buf();
        runner.give(&root)?;
        runner.set_cwd(&root);
        let socket_dir = root.join("sockets");
        runner.mkdir(&socket_dir)?;
        tracing::debug!(dir = %root.display(), replicas, "starting test cluster");
        // Built before the first server starts so that an error below drops
        // it, which stops whatever was started.
        let mut cluster = TestCluster {
            bins,
            runner,
            tmp: Some(tmp),
            root,
            socket_dir,
            nodes: Vec::new(),
            state: Mutex::new(State {
                primary: 0,
                nodes: Vec::new(),
            }),
        };
        let primary = cluster.push_node()?;
        let p = &cluster.nodes[primary];
        node::initdb(&cluster.bins, &cluster.runner, p)?;
        conf::include_node_conf(&p.data_dir())?;
        conf::write_hba(&cluster.runner, &p.data_dir())?;
        cluster.launch_new(primary)?;
        cluster.setup_roles(primary)?;
        let indexes = (0..replicas)
            .map(|_| cluster.push_node())
            .collect::<Result<Vec<_>>>()?;
        cluster.make_replicas(&indexes)?;
        tracing::debug!(dir = %cluster.root.display(), ports = ?cluster.hosts(),
            elapsed = ?t0.elapsed(), "test cluster ready");
        Ok(cluster)
    }

    /// Adds a replica: base backup from the current primary, start, and wait
    /// until it is streaming. Returns the new node's index. On error the
    /// half-made node is torn down and not added.
    pub fn add_replica(&mut self) -> anyhow::Result<usize> {
        let index = self.push_node()?;
        if let Err(e) = self.make_replicas(&[index]) {
            if let Some(n) = self.nodes.pop() {
                node::teardown(&self.bins, &self.runner, &n);
                let _ = std::fs::remove_dir_all(&n.dir);
            }
            self.lock().nodes.pop();
            return Err(e.context(format!("adding replica node {index}")));
        }
        Ok(index)
    }

    /// Base backups from the current primary into the new nodes `indexes`
    /// (concurrently), then starts each (retrying with another port on a port
    /// clash) and waits until all are streaming.
    fn make_replicas(&mut self, indexes: &[usize]) -> Result<()> {
        let primary_port = self.node(self.primary())?.port;
        let (bins, runner, nodes) = (&self.bins, &self.runner, &self.nodes);
        std::thread::scope(|scope| {
            let backups: Vec<_> = indexes
                .iter()
                .map(|&i| {
                    scope.spawn(move || node::basebackup(bins, runner, primary_port, &nodes[i]))
                })
                .collect();
            backups.into_iter().try_for_each(|b| {
                b.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("pg_basebackup thread panicked")))
            })
        })?;
        for &i in indexes {
            self.launch_new(i)?;
        }
        indexes.iter().try_for_each(|&i| self.wait_streaming(i))
    }

    /// Promotes replica `node` (`pg_ctl promote -w`) and returns once it
    /// answers `pg_is_in_recovery() = false`; it becomes [`Self::primary`].
    /// Other replicas are not re-pointed.
    pub fn promote(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        node::promote(&self.bins, &self.runner, n)?;
        self.wait_writable(node)?;
        self.lock().primary = node;
        tracing::debug!(node, "promoted");
        Ok(())
    }

    /// Stops `node` with `pg_ctl stop -m fast -w` (resuming it first if
    /// paused).
    pub fn stop(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        if self.node_state(node).paused {
            self.resume(node)?;
        }
        node::stop(&self.bins, &self.runner, n, "fast", 60)?;
        self.set_state(node, |s| *s = NodeState::default());
        Ok(())
    }

    /// SIGKILLs `node`'s postmaster and all its children, then waits until
    /// its port refuses connections (a crash, as far as PostgreSQL can tell).
    pub fn kill(&self, node: usize) -> anyhow::Result<()> {
        node::kill(self.node(node)?)?;
        self.set_state(node, |s| *s = NodeState::default());
        Ok(())
    }

    /// Starts `node` again (`pg_ctl start -w`) after [`Self::stop`] or
    /// [`Self::kill`], removing a stale `postmaster.pid` left by a kill.
    pub fn start_node(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        if let Some(pid) = n.postmaster() {
            bail!("node {node} is already running (postmaster pid {pid})");
        }
        n.clear_stale_locks()?;
        node::start(&self.bins, &self.runner, n)?;
        self.set_state(node, |s| {
            *s = NodeState {
                running: true,
                paused: false,
            }
        });
        Ok(())
    }

    /// SIGSTOPs `node`'s postmaster and all its children: the port still
    /// accepts TCP connections but nothing answers.
    pub fn pause(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        let pm = n
            .postmaster()
            .with_context(|| format!("node {node} is not running"))?;
        // The postmaster first, so it cannot fork children we would miss.
        process::signal(pm, libc::SIGSTOP)?;
        let kids = process::descendants(pm);
        process::signal_all(&kids, libc::SIGSTOP);
        self.set_state(node, |s| s.paused = true);
        tracing::debug!(node, pid = pm, children = kids.len(), "paused");
        Ok(())
    }

    /// SIGCONTs `node`'s postmaster and all its children.
    pub fn resume(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        let pm = n
            .postmaster()
            .with_context(|| format!("node {node} is not running"))?;
        let kids = process::descendants(pm);
        process::signal_all(&kids, libc::SIGCONT);
        process::signal(pm, libc::SIGCONT)?;
        self.set_state(node, |s| s.paused = false);
        tracing::debug!(node, pid = pm, children = kids.len(), "resumed");
        Ok(())
    }

    /// Turns `node` (not the current primary) into a fresh replica of the
    /// current primary: stop it if running, wipe its data directory, base
    /// backup, start on the same port, wait until streaming. Used to bring an
    /// old primary back after a promotion.
    ///
    /// Replicas that still point at this node's port (the harness does not
    /// re-point them after a promotion) will then connect to the rebuilt node
    /// and, once restarted, may fail with "requested timeline N is not a
    /// child of this server's history"; rebuild them too if a test needs them.
    pub fn rebuild_as_replica(&self, node: usize) -> anyhow::Result<()> {
        let primary = self.primary();
        if node == primary {
            bail!("node {node} is the current primary; promote another node first");
        }
        let n = self.node(node)?;
        if n.postmaster().is_some() {
            if let Err(e) = self.stop(node) {
                tracing::debug!(node, error = %e, "fast stop failed; killing");
                self.kill(node)?;
            }
        }
        self.set_state(node, |s| *s = NodeState::default());
        node::wipe_data_dir(n)?;
        let primary_port = self.node(primary)?.port;
        node::basebackup(&self.bins, &self.runner, primary_port, n)?;
        conf::write_node_conf(&self.runner, &n.data_dir(), node, n.port, &self.socket_dir)?;
        node::start(&self.bins, &self.runner, n)?;
        self.set_state(node, |s| s.running = true);
        self.wait_streaming(node)
    }

    /// Creates the directory and tracked state for a new node with a fresh
    /// port, returning its index.
    fn push_node(&mut self) -> Result<usize> {
        let index = self.nodes.len();
        let port = ports::reserve()?;
        let n = node::create_node_dir(&self.runner, &self.root, &self.socket_dir, index, port)?;
        self.nodes.push(n);
        self.lock().nodes.push(NodeState::default());
        Ok(index)
    }

    /// Writes the node's settings and starts a node whose data directory was
    /// just made. If another process grabbed the port meanwhile, retries with
    /// a new one.
    fn launch_new(&mut self, index: usize) -> Result<()> {
        for attempt in 1..=PORT_ATTEMPTS {
            let n = &self.nodes[index];
            conf::write_node_conf(&self.runner, &n.data_dir(), index, n.port, &self.socket_dir)?;
            let offset = n.log_len();
            match node::start(&self.bins, &self.runner, n) {
                Ok(()) => {
                    self.set_state(index, |s| s.running = true);
                    return Ok(());
                }
                Err(e) if attempt < PORT_ATTEMPTS && node::port_conflict_since(n, offset) => {
                    let port = ports::reserve()?;
                    tracing::debug!(node = index, old = n.port, new = port, error = %e,
                        "port taken by another process; retrying");
                    n.clear_stale_locks()?;
                    self.nodes[index].port = port;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("node {index}: no usable port after {PORT_ATTEMPTS} attempts")
    }
}
