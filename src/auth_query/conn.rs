//! The lookup connection: one per cluster, kept between lookups (logging in for each
//! would cost more than the query), opened again when it breaks, when the settings it
//! was made with change, or when its member stops serving.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Statement};

use super::{LookupError, Settings};
use crate::auth::Secret;
use crate::cluster::{ClusterState, Node, NodeRole};
use crate::config::Role;
use crate::tls::{host_of, ServerTls};

/// Logs in to `node` as `user` (with `password`, or none for trust) to database
/// `dbname`, with TLS as the cluster's `server_tls_*` say. Every lookup connection is
/// made here.
pub async fn connect(
    node: &Node,
    tls: &ServerTls,
    user: &str,
    password: Option<&str>,
    dbname: &str,
) -> Result<Client, LookupError> {
    let unreachable = |e: &dyn std::fmt::Display| LookupError::Unreachable {
        node: node.addr.clone(),
        reason: e.to_string(),
    };
    let stream = TcpStream::connect(&node.addr)
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = stream.set_nodelay(true);
    let mut pg = tokio_postgres::Config::new();
    pg.user(user)
        .dbname(dbname)
        .application_name("pgfleet auth_query");
    if let Some(pw) = password {
        pg.password(pw);
    }
    pg.ssl_mode(tls.ssl_mode());
    let make = &mut tls.for_postgres();
    let connect = MakeTlsConnect::<TcpStream>::make_tls_connect(make, host_of(&node.addr))
        .map_err(|e| unreachable(&format!("TLS: {e}")))?;
    let (client, conn) =
        pg.connect_raw(stream, connect)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => LookupError::Login {
                    node: node.addr.clone(),
                    reason: format!("{} ({})", db.message(), db.code().code()),
                },
                None => unreachable(&e),
            })?;
    // Ends when the client is dropped or the server closes the connection.
    tokio::spawn(conn);
    Ok(client)
}

/// A logged-in lookup connection and its prepared `auth_query`.
pub(super) struct LookupConn {
    node: Arc<Node>,
    /// The settings it was made with: other settings need another connection.
    made_with: Settings,
    client: Client,
    statement: Statement,
}

impl std::fmt::Debug for LookupConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupConn")
            .field("node", &self.node.addr)
            .field("user", &self.made_with.auth.user)
            .finish_non_exhaustive()
    }
}

/// The cluster's lookup connection, if one is open.
#[derive(Debug, Default)]
pub(super) struct Kept(tokio::sync::Mutex<Option<Arc<LookupConn>>>);

impl Kept {
    /// Runs `auth_query` for `user` by `deadline`: on the kept connection when it still
    /// fits, else on a new one. A kept connection found broken is replaced once.
    pub async fn lookup(
        &self,
        cluster: &ClusterState,
        settings: &Settings,
        user: &str,
        deadline: Instant,
    ) -> Result<Option<Secret>, LookupError> {
        loop {
            let (conn, fresh) = self.connection(cluster, settings, deadline).await?;
            let answer = timeout_at(deadline, conn.client.query(&conn.statement, &[&user])).await;
            let rows = match answer {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) if e.is_closed() => {
                    self.forget(&conn).await;
                    if fresh {
                        return Err(LookupError::Unreachable {
                            node: conn.node.addr.clone(),
                            reason: e.to_string(),
                        });
                    }
                    // The server went away since the last lookup (a restart): once more.
                    continue;
                }
                Ok(Err(e)) => return Err(query_error(&conn.node, &e)),
                Err(_) => {
                    // The server may be stuck: the next lookup opens another connection.
                    self.forget(&conn).await;
                    return Err(LookupError::Timeout(settings.timeout));
                }
            };
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            return match row.try_get::<_, Option<String>>(1) {
                Ok(password) => Ok(password.map(|p| Secret::parse(&p))),
                Err(e) => Err(LookupError::Query {
                    node: conn.node.addr.clone(),
                    reason: format!("the second column must be the password, as text: {e}"),
                }),
            };
        }
    }

    /// The kept connection if it fits, else a new one (kept); and whether it is new.
    async fn connection(
        &self,
        cluster: &ClusterState,
        settings: &Settings,
        deadline: Instant,
    ) -> Result<(Arc<LookupConn>, bool), LookupError> {
        // Held while connecting: lookups of other users wait for this connection
        // rather than open their own.
        let Ok(mut kept) = timeout_at(deadline, self.0.lock()).await else {
            return Err(LookupError::Timeout(settings.timeout));
        };
        if let Some(conn) = kept.as_ref() {
            let fits = !conn.client.is_closed()
                && conn.made_with == *settings
                && cluster.fits(&conn.node, Role::Any);
            if fits {
                return Ok((conn.clone(), false));
            }
        }
        *kept = None;
        let open = open(cluster, settings, deadline);
        let conn = match timeout_at(deadline, open).await {
            Ok(c) => Arc::new(c?),
            Err(_) => return Err(LookupError::Timeout(settings.timeout)),
        };
        *kept = Some(conn.clone());
        Ok((conn, true))
    }

    /// Drops `conn` if it is still the kept one.
    async fn forget(&self, conn: &Arc<LookupConn>) {
        let mut kept = self.0.lock().await;
        if kept.as_ref().is_some_and(|k| Arc::ptr_eq(k, conn)) {
            *kept = None;
        }
    }
}

/// A new lookup connection to a serving member (a replica first: the writer has other
/// work), waiting for one until `deadline`. A member that cannot be reached is skipped;
/// a refused login or a query that cannot be prepared ends the attempt (every member
/// would say the same).
async fn open(
    cluster: &ClusterState,
    settings: &Settings,
    deadline: Instant,
) -> Result<LookupConn, LookupError> {
    let mut last = None;
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let changed = cluster.changed.notified();
        tokio::pin!(changed);
        // Registered before looking, so a member coming up from here on is not missed.
        changed.as_mut().enable();
        let Some(node) = serving(cluster, &tried) else {
            if let Some(e) = last.take() {
                return Err(e);
            }
            if timeout_at(deadline, changed).await.is_err() {
                return Err(LookupError::NoMember(settings.timeout));
            }
            continue;
        };
        tried.push(node.index);
        let a = &settings.auth;
        let password = settings.password.as_deref();
        let tls = cluster.pools.server_tls();
        let client = match connect(&node, &tls, &a.user, password, &a.dbname).await {
            Ok(c) => c,
            Err(e @ LookupError::Unreachable { .. }) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let statement = client
            .prepare(&a.query)
            .await
            .map_err(|e| query_error(&node, &e))?;
        return Ok(LookupConn {
            node,
            made_with: settings.clone(),
            client,
            statement,
        });
    }
}

/// A member that takes sessions now and was not tried yet, replicas first.
fn serving(cluster: &ClusterState, tried: &[usize]) -> Option<Arc<Node>> {
    let nodes = cluster.nodes();
    let fit = || {
        nodes
            .iter()
            .filter(|n| !tried.contains(&n.index) && cluster.fits(n, Role::Any))
    };
    let replica = fit().find(|n| n.role() == NodeRole::Replica);
    replica.or_else(|| fit().next()).cloned()
}

fn query_error(node: &Node, e: &tokio_postgres::Error) -> LookupError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    LookupError::Query {
        node: node.addr.clone(),
        reason,
    }
}
