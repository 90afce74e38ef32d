//! What a run found: the counts, and the first faults in detail.

use std::collections::BTreeMap;
use std::time::Duration;

use super::run::{Client, Fault, FaultKind, Settings};
use super::steps::Kind;
use super::wire::Marker;

/// The outcome of a run.
pub struct Report {
    pub settings: Settings,
    pub target: String,
    pub clients: Vec<Client>,
    pub elapsed: Duration,
}

impl Report {
    pub fn steps(&self) -> u64 {
        self.clients.iter().map(|c| c.step).sum()
    }

    pub fn wrong_answers(&self) -> u64 {
        self.clients.iter().map(|c| c.wrong_answers).sum()
    }

    pub fn faults(&self) -> Vec<&Fault> {
        let mut all: Vec<&Fault> = self.clients.iter().flat_map(|c| &c.faults).collect();
        all.sort_by_key(|f| (f.what, f.client, f.step));
        all
    }

    /// The step kind of the step that asked for a marker, if a client of this run did.
    fn source(&self, text: &str) -> Option<Kind> {
        let m = Marker::find(text)?;
        let client = self.clients.iter().find(|c| c.id == m.client)?;
        client.log.get(m.step as usize).copied()
    }

    /// The summary and the first faults in detail, for the test's output.
    pub fn text(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "isolation against {}: seed {} (PGFLEET_ISOLATION_SEED={}), {} clients, {:.1} s, \
             {} steps, {} logins, {} wrong answers, {} faults\n",
            self.target,
            s.seed,
            s.seed,
            self.clients.len(),
            self.elapsed.as_secs_f64(),
            self.steps(),
            self.clients.iter().map(|c| c.logins).sum::<u64>(),
            self.wrong_answers(),
            self.faults().len(),
        );
        let mut kinds: BTreeMap<Kind, u64> = BTreeMap::new();
        for k in self.clients.iter().flat_map(|c| &c.log) {
            *kinds.entry(*k).or_default() += 1;
        }
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        out += &format!("  steps by kind: {}\n", list.join(", "));
        let mut by: BTreeMap<(FaultKind, Kind), u64> = BTreeMap::new();
        let mut sources: BTreeMap<Kind, u64> = BTreeMap::new();
        for f in self.faults() {
            *by.entry((f.what, f.kind)).or_default() += 1;
            for w in &f.wrong {
                if let Some(k) = self.source(w) {
                    *sources.entry(k).or_default() += 1;
                }
            }
        }
        for ((what, kind), n) in &by {
            out += &format!("  {what:?} in {} steps: {n}\n", kind.name());
        }
        if !sources.is_empty() {
            let list: Vec<String> = sources
                .iter()
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect();
            out += &format!(
                "  the wrong values answered other clients' steps of kind: {}\n",
                list.join(", ")
            );
        }
        for f in self.faults().into_iter().take(self.settings.details) {
            out += &format!(
                "  {:?}: client {} step {} ({}) write {}: sent {:?}\n    expected {:?}\n    got      {:?}\n",
                f.what,
                f.client,
                f.step,
                f.kind.name(),
                f.phase,
                f.sent,
                f.expected,
                f.got
            );
            for w in &f.wrong {
                out += &format!("    wrong: {w}\n");
            }
            for h in &f.history {
                out += &format!("    after {h}\n");
            }
            if !f.note.is_empty() {
                out += &format!("    note: {}\n", f.note);
            }
        }
        out
    }
}
