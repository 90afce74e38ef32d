//! The steps a generated client draws from, and how each is sent: one or more writes
//! (phases), each checked against the model before the next is sent, or sent blind
//! just before the client drops its connection.

use rand::Rng;

use super::model::Status;
use super::run::{Client, Fault};
use super::wire::{Msg, Row, Stmt};

pub use super::kind::{Kind, KINDS};

/// Named statements the clients prepare: `select $1::text`.
const NAMES: [&str; 3] = ["s0", "s1", "s2"];

impl Client {
    pub(super) fn in_block(&self) -> bool {
        self.model.status != Status::Idle
    }

    /// Draws the next step's kind.
    pub(super) fn choose(&mut self, skip: &[Kind]) -> Kind {
        let in_block = self.in_block();
        let weights: Vec<u32> = KINDS
            .iter()
            .map(|k| {
                if skip.contains(k) {
                    0
                } else {
                    k.weight(in_block)
                }
            })
            .collect();
        let total: u32 = weights.iter().sum();
        assert!(total > 0, "every step kind is skipped");
        let mut pick = self.rng.gen_range(0..total);
        for (k, w) in KINDS.iter().zip(weights) {
            if pick < w {
                return *k;
            }
            pick -= w;
        }
        unreachable!()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn rows(&mut self) -> Vec<Row> {
        let n = self.rng.gen_range(1..4);
        (0..n)
            .map(|_| Row::Good(self.rng.gen_range(0..1000)))
            .collect()
    }

    /// One Parse(when needed)/Bind/Execute returning a fresh marker, unnamed or named;
    /// `parsed` holds the names Parsed earlier in the same unsent batch.
    fn select_execute(&mut self, parsed: &mut Vec<String>) -> Vec<Msg> {
        let describe = self.chance(0.3);
        let mut out = Vec::new();
        if self.chance(0.5) {
            if self.chance(0.5) {
                let m = self.marker();
                out.push(Msg::Parse(String::new(), Stmt::Select(m)));
                out.push(Msg::Bind(String::new(), None));
            } else {
                out.push(Msg::Parse(String::new(), Stmt::SelectParam));
                let m = self.marker();
                out.push(Msg::Bind(String::new(), Some(m)));
            }
        } else {
            let name = NAMES[self.rng.gen_range(0..NAMES.len())].to_string();
            if !self.model.named.contains_key(&name) && !parsed.contains(&name) {
                parsed.push(name.clone());
                out.push(Msg::Parse(name.clone(), Stmt::SelectParam));
            } else if self.chance(0.3) {
                out.push(Msg::DescribeStatement(name.clone()));
            }
            let m = self.marker();
            out.push(Msg::Bind(name, Some(m)));
        }
        if describe {
            out.push(Msg::DescribePortal);
        }
        out.push(Msg::Execute);
        out
    }

    /// A Parse/Bind/Execute that fails, naming a fresh marker where it can.
    fn failing_execute(&mut self) -> Vec<Msg> {
        match self.rng.gen_range(0..3) {
            0 => {
                let m = self.marker();
                vec![
                    Msg::Parse(String::new(), Stmt::Cast(m)),
                    Msg::Bind(String::new(), None),
                    Msg::Execute,
                ]
            }
            1 => {
                let m = self.marker();
                vec![
                    Msg::Parse(String::new(), Stmt::CastParam),
                    Msg::Bind(String::new(), Some(m)),
                    Msg::Execute,
                ]
            }
            _ => vec![
                Msg::Parse(String::new(), Stmt::DivZero),
                Msg::Bind(String::new(), None),
                Msg::Execute,
            ],
        }
    }

    /// Flushes sprinkled between the messages.
    fn sprinkle_flushes(&mut self, msgs: Vec<Msg>) -> Vec<Msg> {
        let mut out = Vec::new();
        for m in msgs {
            out.push(m);
            if self.chance(0.15) {
                out.push(Msg::Flush);
            }
        }
        out
    }

    fn ending(&mut self) -> Stmt {
        if self.chance(0.5) {
            Stmt::Commit
        } else {
            Stmt::Rollback
        }
    }

    /// A transaction-control statement sent with the extended protocol.
    fn extended_control(stmt: Stmt) -> Vec<Msg> {
        vec![
            Msg::Parse(String::new(), stmt),
            Msg::Bind(String::new(), None),
            Msg::Execute,
            Msg::Sync,
        ]
    }

    /// The COPY FROM STDIN Query; true if the COPY has begun (it fails in an aborted
    /// block).
    async fn start_copy(&mut self) -> Result<bool, Fault> {
        self.phase(vec![Msg::Query(vec![Stmt::CopyIn])]).await?;
        Ok(self.model.in_copy())
    }

    pub(super) async fn run_step(&mut self, kind: Kind) -> Result<(), Fault> {
        match kind {
            Kind::Select => {
                if self.chance(0.1) {
                    return self.phase(vec![Msg::Query(vec![Stmt::Empty])]).await;
                }
                let m = self.marker();
                self.phase(vec![Msg::Query(vec![Stmt::Select(m)])]).await
            }
            Kind::Multi => {
                let n = self.rng.gen_range(2..5);
                let stmts = (0..n).map(|_| Stmt::Select(self.marker())).collect();
                self.phase(vec![Msg::Query(stmts)]).await
            }
            Kind::QueryError => {
                let first = Stmt::Select(self.marker());
                let bad = if self.chance(0.5) {
                    Stmt::Cast(self.marker())
                } else {
                    Stmt::DivZero
                };
                let after = Stmt::Select(self.marker());
                self.phase(vec![Msg::Query(vec![first, bad, after])]).await
            }
            Kind::Pipelined => {
                let mut msgs = Vec::new();
                let whole_block = !self.in_block() && self.chance(0.4);
                if whole_block {
                    msgs.push(Msg::Query(vec![Stmt::Begin]));
                }
                for _ in 0..self.rng.gen_range(2..4) {
                    let stmt = if self.chance(0.15) {
                        Stmt::Cast(self.marker())
                    } else {
                        Stmt::Select(self.marker())
                    };
                    msgs.push(Msg::Query(vec![stmt]));
                }
                if whole_block {
                    let end = self.ending();
                    msgs.push(Msg::Query(vec![end]));
                }
                self.phase(msgs).await
            }
            Kind::Begin => match self.rng.gen_range(0..3) {
                0 => self.phase(vec![Msg::Query(vec![Stmt::Begin])]).await,
                1 => {
                    let m = self.marker();
                    self.phase(vec![Msg::Query(vec![Stmt::Begin, Stmt::Select(m)])])
                        .await
                }
                _ => self.phase(Self::extended_control(Stmt::Begin)).await,
            },
            Kind::End => {
                let end = self.ending();
                if self.chance(0.7) {
                    self.phase(vec![Msg::Query(vec![end])]).await
                } else {
                    self.phase(Self::extended_control(end)).await
                }
            }
            Kind::Extended => {
                let mut parsed = Vec::new();
                let mut msgs = self.select_execute(&mut parsed);
                msgs.push(Msg::Sync);
                self.phase(msgs).await
            }
            Kind::Batch | Kind::BatchError => {
                let n = self.rng.gen_range(2..5);
                let bad_at = (kind == Kind::BatchError).then(|| self.rng.gen_range(0..n));
                let mut msgs = Vec::new();
                let mut parsed = Vec::new();
                for i in 0..n {
                    if bad_at == Some(i) {
                        msgs.extend(self.failing_execute());
                    } else {
                        msgs.extend(self.select_execute(&mut parsed));
                    }
                }
                let mut msgs = self.sprinkle_flushes(msgs);
                msgs.push(Msg::Sync);
                self.phase(msgs).await
            }
            Kind::FlushWait => {
                let mut parsed = Vec::new();
                let mut msgs = self.select_execute(&mut parsed);
                msgs.push(Msg::Flush);
                self.phase(msgs).await?;
                let mut last = Vec::new();
                if self.chance(0.3) {
                    last.extend(self.select_execute(&mut parsed));
                }
                last.push(Msg::Sync);
                self.phase(last).await
            }
            Kind::SyncAlone => {
                let n = self.rng.gen_range(1..3);
                self.phase(vec![Msg::Sync; n]).await
            }
            Kind::Close => {
                let name = NAMES[self.rng.gen_range(0..NAMES.len())].to_string();
                self.phase(vec![Msg::Close(name), Msg::Sync]).await
            }
            Kind::CopyIn => {
                if self.chance(0.3) {
                    // All in one write, without waiting for CopyInResponse.
                    let rows = self.rows();
                    let msgs = vec![
                        Msg::Query(vec![Stmt::CopyIn]),
                        Msg::CopyData(rows),
                        Msg::CopyDone,
                    ];
                    return self.phase(msgs).await;
                }
                if !self.start_copy().await? {
                    return Ok(());
                }
                let mut msgs = vec![Msg::CopyData(self.rows())];
                match self.rng.gen_range(0..3) {
                    0 => msgs.push(Msg::Sync),
                    1 => msgs.push(Msg::Flush),
                    _ => {}
                }
                msgs.push(Msg::CopyData(self.rows()));
                msgs.push(Msg::CopyDone);
                self.phase(msgs).await
            }
            Kind::CopyBad => {
                if !self.start_copy().await? {
                    return Ok(());
                }
                let mut rows = self.rows();
                rows.push(Row::Bad(self.marker()));
                let mut msgs = vec![Msg::CopyData(rows)];
                if self.chance(0.5) {
                    msgs.push(Msg::CopyData(self.rows()));
                }
                msgs.push(Msg::CopyDone);
                self.phase(msgs).await
            }
            Kind::CopyFail => {
                if !self.start_copy().await? {
                    return Ok(());
                }
                let rows = self.rows();
                let m = self.marker();
                self.phase(vec![Msg::CopyData(rows), Msg::CopyFail(m)])
                    .await
            }
            Kind::CopyBadSync => {
                let variant = self.rng.gen_range(0..5);
                if variant == 4 {
                    // Query, bad row and Sync in one write.
                    let m = self.marker();
                    let msgs = vec![
                        Msg::Query(vec![Stmt::CopyIn]),
                        Msg::CopyData(vec![Row::Bad(m)]),
                        Msg::Sync,
                    ];
                    return self.phase(msgs).await;
                }
                if !self.start_copy().await? {
                    return Ok(());
                }
                let msgs = match variant {
                    // The case of the COPY probe.
                    0 => vec![Msg::CopyData(vec![Row::Bad(self.marker())]), Msg::Sync],
                    // The first Sync is swallowed inside the COPY, the second answered.
                    1 => vec![
                        Msg::CopyData(self.rows()),
                        Msg::Sync,
                        Msg::CopyData(vec![Row::Bad(self.marker())]),
                        Msg::Sync,
                    ],
                    2 => vec![
                        Msg::CopyData(vec![Row::Bad(self.marker())]),
                        Msg::Sync,
                        Msg::Sync,
                    ],
                    _ => vec![
                        Msg::CopyData(vec![Row::Bad(self.marker())]),
                        Msg::CopyDone,
                        Msg::Sync,
                    ],
                };
                self.phase(msgs).await
            }
            Kind::ExtCopyIn => {
                let mut first = vec![
                    Msg::Parse(String::new(), Stmt::CopyIn),
                    Msg::Bind(String::new(), None),
                    Msg::Execute,
                ];
                // libpq pipelines a Sync after the Execute; the COPY swallows it.
                let synced = self.chance(0.5);
                if synced {
                    first.push(Msg::Sync);
                }
                self.phase(first).await?;
                if !self.model.in_copy() {
                    // It failed (an aborted block): end the skipping.
                    if !synced {
                        self.phase(vec![Msg::Sync]).await?;
                    }
                    return Ok(());
                }
                let mut rows = self.rows();
                if self.chance(0.4) {
                    rows.push(Row::Bad(self.marker()));
                }
                self.phase(vec![Msg::CopyData(rows), Msg::CopyDone, Msg::Sync])
                    .await
            }
            Kind::CopyOut => {
                let m = self.marker();
                if self.chance(0.6) {
                    self.phase(vec![Msg::Query(vec![Stmt::CopyOut(m)])]).await
                } else {
                    self.phase(Self::extended_control(Stmt::CopyOut(m))).await
                }
            }
            Kind::StrayCopy => {
                let mut msgs = Vec::new();
                for _ in 0..self.rng.gen_range(1..3) {
                    msgs.push(match self.rng.gen_range(0..3) {
                        0 => Msg::CopyData(self.rows()),
                        1 => Msg::CopyDone,
                        _ => Msg::CopyFail(self.marker()),
                    });
                }
                if self.chance(0.5) {
                    msgs.push(Msg::Query(vec![Stmt::Select(self.marker())]));
                } else {
                    msgs.push(Msg::Sync);
                }
                self.phase(msgs).await
            }
            Kind::Function => {
                let m = self.marker();
                self.phase(vec![Msg::Function(m)]).await
            }
            Kind::Drop => self.drop_step().await,
        }
    }

    async fn drop_step(&mut self) -> Result<(), Fault> {
        match self.rng.gen_range(0..6) {
            // Half a message.
            0 => self.send_only(vec![Msg::Partial]).await?,
            // A batch without its Sync.
            1 => {
                let msgs = self.select_execute(&mut Vec::new());
                self.send_only(msgs).await?;
            }
            // Inside a transaction block, with a query in flight or not.
            2 => {
                if !self.in_block() {
                    let m = self.marker();
                    self.phase(vec![Msg::Query(vec![Stmt::Begin, Stmt::Select(m)])])
                        .await?;
                }
                if self.chance(0.5) {
                    let m = self.marker();
                    self.send_only(vec![Msg::Query(vec![Stmt::Select(m)])])
                        .await?;
                }
            }
            // Inside a COPY FROM STDIN.
            3 => {
                if self.start_copy().await? {
                    let rows = self.rows();
                    self.send_only(vec![Msg::CopyData(rows)]).await?;
                }
            }
            // Answers unread.
            4 => {
                let m = self.marker();
                self.send_only(vec![Msg::Query(vec![Stmt::Select(m)])])
                    .await?;
            }
            _ => self.send_only(vec![Msg::Terminate]).await?,
        }
        self.disconnect();
        Ok(())
    }
}
