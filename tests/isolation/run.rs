//! Running generated clients side by side and judging what each one hears.
//!
//! A client sends a step's messages one write (phase) at a time; before each write its
//! model of the server says what PostgreSQL answers, and the client reads until it has
//! as many ReadyForQuery as that answer holds (or as many events, when it holds none).
//! Every value that comes back (a row, COPY data, a function result, the value an
//! error message names) must be a marker this client sent on this connection, later
//! than the last one it got; a ReadyForQuery or a COPY the client does not owe at that
//! point is not its own either: anything else is a wrong answer. An answer of its own
//! that differs from the model's otherwise is a mismatch; a read that waits past the
//! deadline is a hang. After any of them the client drops its connection, logs in
//! again and goes on, so one fault does not cascade into the next steps.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::model::Server;
use super::steps::Kind;
use super::wire::{encode, Conn, Event, Marker, Msg, ReadError};

pub use super::report::Report;

/// How long a run lasts and who takes part; from the environment for long runs by hand.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub clients: u32,
    pub duration: Duration,
    /// Steps per client at most, whichever of this and `duration` comes first.
    pub max_steps: u64,
    /// Step kinds left out (`PGFLEET_ISOLATION_SKIP=copy_bad_sync,drop`).
    pub skip: Vec<Kind>,
    /// How many faults the report shows in full.
    pub details: usize,
}

impl Settings {
    /// `PGFLEET_ISOLATION_SECONDS`, `PGFLEET_ISOLATION_SEED`, `PGFLEET_ISOLATION_CLIENTS`,
    /// `PGFLEET_ISOLATION_STEPS`, `PGFLEET_ISOLATION_SKIP`, `PGFLEET_ISOLATION_DETAILS`
    /// (faults shown in full, 12); a fresh seed when unset.
    pub fn from_env(seconds: f64, clients: u32) -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let num = |name: &str| {
            var(name).map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        let seed = var("PGFLEET_ISOLATION_SEED")
            .map(|v| v.parse().expect("PGFLEET_ISOLATION_SEED is a u64"))
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.unwrap().as_nanos() as u64 % 1_000_000_000
            });
        let skip = var("PGFLEET_ISOLATION_SKIP").unwrap_or_default();
        let skip = skip
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Kind::named(s.trim()).unwrap_or_else(|| panic!("no step kind {s:?}")))
            .collect();
        let long = num("PGFLEET_ISOLATION_SECONDS");
        // A run of a set length is bounded by it alone, unless steps are set too.
        let steps = if long.is_some() { u64::MAX } else { 5_000 };
        Settings {
            seed,
            clients: num("PGFLEET_ISOLATION_CLIENTS").map_or(clients, |n| n as u32),
            duration: Duration::from_secs_f64(long.unwrap_or(seconds)),
            max_steps: num("PGFLEET_ISOLATION_STEPS").map_or(steps, |n| n as u64),
            skip,
            details: num("PGFLEET_ISOLATION_DETAILS").map_or(12, |n| n as usize),
        }
    }
}

/// Where the clients connect and what they need to know about it.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// The oid of `textcat(text, text)`, for FunctionCall.
    pub textcat: u32,
    /// The deadline of every read.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// A value that is not the client's own, or comes out of the order it was asked.
    Wrong,
    /// Nothing whole arrived within the read deadline.
    Hang,
    /// The connection closed under the client (or refused the login).
    Closed,
    /// The client's own answers, but not what PostgreSQL would have said.
    Mismatch,
    /// The client's own misstep (a Sync after data inside a COPY, started by an Execute,
    /// that the server aborts) left answers no proxy can count; pgfleet kept the
    /// connection for it, then ended its session with 08P01 when it would have had to
    /// add messages of its own.
    FailedClosed,
}

/// One step that went wrong, with what it sent, expected and got.
#[derive(Clone, Debug)]
pub struct Fault {
    pub what: FaultKind,
    pub client: u32,
    pub step: u64,
    pub kind: Kind,
    /// Which write of the step (0-based).
    pub phase: usize,
    pub sent: Vec<Msg>,
    pub expected: Vec<Event>,
    pub got: Vec<Event>,
    /// The values that were not this client's to get.
    pub wrong: Vec<String>,
    pub note: String,
    /// The client's last writes before this one on the same connection.
    pub history: Vec<String>,
}

/// One generated client: its connection, its model of the server behind it, its dice.
pub struct Client {
    pub id: u32,
    pub(super) rng: StdRng,
    target: Target,
    conn: Option<Conn>,
    pub(super) model: Server,
    pub(super) step: u64,
    /// The next marker index within the step.
    index: u32,
    /// The first step on the current connection: older markers can no longer come.
    first_step: u64,
    /// A copy_bad_sync step ran on the current connection.
    misstep: bool,
    last: Option<Marker>,
    kind: Kind,
    phase: usize,
    /// The kind of every step, by step number.
    pub log: Vec<Kind>,
    pub faults: Vec<Fault>,
    pub wrong_answers: u64,
    pub logins: u64,
    /// The last writes on this connection, for the report of a fault.
    recent: VecDeque<String>,
}

impl Client {
    pub fn new(id: u32, seed: u64, target: Target) -> Client {
        let rng =
            StdRng::seed_from_u64(seed ^ (u64::from(id) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Client {
            id,
            rng,
            target,
            conn: None,
            model: Server::new(),
            step: 0,
            index: 0,
            first_step: 0,
            misstep: false,
            last: None,
            kind: Kind::Select,
            phase: 0,
            log: Vec::new(),
            faults: Vec::new(),
            wrong_answers: 0,
            logins: 0,
            recent: VecDeque::new(),
        }
    }

    /// A new marker of the current step.
    pub(super) fn marker(&mut self) -> Marker {
        self.index += 1;
        Marker {
            client: self.id,
            step: self.step,
            index: self.index - 1,
        }
    }

    /// Runs steps until the deadline, `max_steps`, or a second hang.
    pub async fn run(mut self, until: Instant, settings: &Settings) -> Client {
        let mut hangs = 0;
        while Instant::now() < until && self.step < settings.max_steps && hangs < 2 {
            let kind = self.choose(&settings.skip);
            self.kind = kind;
            self.log.push(kind);
            if kind == Kind::CopyBadSync {
                self.misstep = true;
            }
            self.index = 0;
            self.phase = 0;
            let result = match self.ensure_connected().await {
                Ok(()) => self.run_step(kind).await,
                Err(f) => Err(f),
            };
            if let Err(f) = result {
                if f.what == FaultKind::Hang {
                    hangs += 1;
                }
                if f.what == FaultKind::Wrong {
                    self.wrong_answers += f.wrong.len() as u64;
                }
                self.faults.push(f);
                self.disconnect();
            }
            self.step += 1;
        }
        self.disconnect();
        self
    }

    async fn ensure_connected(&mut self) -> Result<(), Fault> {
        if self.conn.is_some() {
            return Ok(());
        }
        match Conn::open(self.target.addr, self.target.timeout).await {
            Ok(c) => {
                self.conn = Some(c);
                self.logins += 1;
                self.first_step = self.step;
                self.model = Server::new();
                Ok(())
            }
            Err(e) => {
                let what = if e.contains("timed out") || e.contains("Timeout") {
                    FaultKind::Hang
                } else {
                    FaultKind::Closed
                };
                Err(self.fault(what, vec![], vec![], vec![], vec![], format!("login: {e}")))
            }
        }
    }

    /// Drops the connection (without a Terminate); the next step logs in again.
    pub(super) fn disconnect(&mut self) {
        self.conn = None;
        self.misstep = false;
        self.model = Server::new();
        self.recent.clear();
    }

    fn remember(&mut self, msgs: &[Msg]) {
        if self.recent.len() == 6 {
            self.recent.pop_front();
        }
        let (step, kind) = (self.step, self.kind.name());
        self.recent
            .push_back(format!("step {step} ({kind}): {msgs:?}"));
    }

    /// Sends `msgs` and reads nothing: the step is about to drop the connection.
    pub(super) async fn send_only(&mut self, msgs: Vec<Msg>) -> Result<(), Fault> {
        self.remember(&msgs);
        let bytes = encode(&msgs, self.target.textcat);
        let conn = self.conn.as_mut().expect("connected");
        // A send that fails here only means the other side went first.
        let _ = conn.send(&bytes).await;
        self.phase += 1;
        Ok(())
    }

    /// Sends `msgs` in one write, reads the answer the model predicts and checks it.
    pub(super) async fn phase(&mut self, msgs: Vec<Msg>) -> Result<(), Fault> {
        let expected = self.model.answer(&msgs);
        self.remember(&msgs);
        let bytes = encode(&msgs, self.target.textcat);
        let readies = expected
            .iter()
            .filter(|e| matches!(e, Event::Ready(_)))
            .count();
        let conn = self.conn.as_mut().expect("connected");
        let mut got = Vec::new();
        let mut wrong = Vec::new();
        let mut ended = None;
        if let Err(e) = conn.send(&bytes).await {
            ended = Some(e);
        }
        while ended.is_none() {
            let have = got.iter().filter(|e| matches!(e, Event::Ready(_))).count();
            let done = if readies > 0 {
                have >= readies
            } else {
                got.len() >= expected.len()
            };
            if done {
                break;
            }
            match conn.event().await {
                Ok(e) => {
                    if let Some(w) = judge(self.id, self.first_step, self.step, &mut self.last, &e)
                    {
                        wrong.push(w);
                    }
                    got.push(e);
                }
                Err(e) => ended = Some(e),
            }
        }
        // A ReadyForQuery the client's own sequence does not owe at that point (its
        // answer is not complete, or it would carry another transaction status), or a
        // COPY it did not start, cannot be its own: another client's, or one made up.
        let diverge = got.iter().zip(&expected).position(|(g, e)| g != e);
        if let Some(i) = diverge {
            if matches!(got[i], Event::Ready(_) | Event::CopyIn | Event::CopyOut) {
                wrong.push(format!(
                    "{:?} where {:?} was due: not this client's",
                    got[i], expected[i]
                ));
            }
        }
        let phase = self.phase;
        self.phase += 1;
        if ended.is_none() && wrong.is_empty() && got == expected {
            return Ok(());
        }
        let mut note = String::new();
        if ended.is_none() {
            // What else comes shows where the stream went (late answers of its own...).
            let conn = self.conn.as_mut().expect("connected");
            let late = conn.events_until_quiet(Duration::from_millis(300)).await;
            if let Ok(late) = &late {
                for e in late {
                    if let Some(w) = judge(self.id, self.first_step, self.step, &mut self.last, e) {
                        wrong.push(w);
                    }
                }
            }
            note = format!("then {late:?}");
        }
        let what = match ended {
            _ if !wrong.is_empty() => FaultKind::Wrong,
            Some(ReadError::Timeout) => FaultKind::Hang,
            Some(ReadError::Closed(why)) => {
                let failed_closed = self.misstep
                    && got
                        .iter()
                        .any(|e| matches!(e, Event::Error(code, _) if code == "08P01"));
                note = why;
                match failed_closed {
                    true => FaultKind::FailedClosed,
                    false => FaultKind::Closed,
                }
            }
            None => FaultKind::Mismatch,
        };
        let mut f = self.fault(what, msgs, expected, got, wrong, note);
        f.phase = phase;
        Err(f)
    }

    fn fault(
        &self,
        what: FaultKind,
        sent: Vec<Msg>,
        expected: Vec<Event>,
        got: Vec<Event>,
        wrong: Vec<String>,
        note: String,
    ) -> Fault {
        Fault {
            what,
            client: self.id,
            step: self.step,
            kind: self.kind,
            phase: self.phase,
            sent,
            expected,
            got,
            wrong,
            note,
            history: self.recent.iter().rev().skip(1).rev().cloned().collect(),
        }
    }
}

/// Whether `e`'s value may reach client `me` now: its own, sent on this connection
/// (`first_step..=step`), later than the last one it got. Returns what was wrong.
fn judge(
    me: u32,
    first_step: u64,
    step: u64,
    last: &mut Option<Marker>,
    e: &Event,
) -> Option<String> {
    if let Some(Err(text)) = e.value() {
        return Some(format!("{e:?}: not a marker ({text:?})"));
    }
    let m = e.marker()?;
    if m.client != me {
        return Some(format!("{e:?}: client {}'s", m.client));
    }
    if m.step < first_step || m.step > step {
        return Some(format!("{e:?}: not sent on this connection"));
    }
    if last.is_some_and(|l| m <= l) {
        return Some(format!("{e:?}: out of order (after {})", last.unwrap()));
    }
    *last = Some(m);
    None
}

/// Runs `settings.clients` clients against `target` at once.
pub async fn run(target: Target, settings: Settings) -> Report {
    println!(
        "isolation against {}: seed {} (replay with PGFLEET_ISOLATION_SEED={}), {} clients, {:?}",
        target.name, settings.seed, settings.seed, settings.clients, settings.duration
    );
    let start = Instant::now();
    let until = start + settings.duration;
    let tasks: Vec<_> = (0..settings.clients)
        .map(|id| {
            let client = Client::new(id, settings.seed, target.clone());
            let settings = settings.clone();
            tokio::spawn(async move { client.run(until, &settings).await })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("a client task panicked"));
    }
    Report {
        settings,
        target: target.name,
        clients,
        elapsed: start.elapsed(),
    }
}
