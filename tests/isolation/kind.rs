//! The kinds of step a generated client draws from, their names and weights.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `select 'm'` (or the empty query)
    Select,
    /// Several selects in one Query.
    Multi,
    /// A Query whose middle statement fails (`'m'::int`, `1/0`).
    QueryError,
    /// Several Query messages in one write, sometimes a whole BEGIN…COMMIT.
    Pipelined,
    /// BEGIN (simple or extended), sometimes with a select; the block then runs over
    /// the following steps.
    Begin,
    /// COMMIT or ROLLBACK (simple or extended).
    End,
    /// Parse/Bind/Describe/Execute/Sync, unnamed or with a named statement.
    Extended,
    /// Several Executes before one Sync, Flushes in between.
    Batch,
    /// A batch whose middle element fails at Parse or Bind: the rest is skipped.
    BatchError,
    /// Parse/Bind/Execute/Flush, read the row, then Sync in a write of its own.
    FlushWait,
    /// Sync alone (once or twice).
    SyncAlone,
    /// Close of a named statement, then Sync.
    Close,
    /// COPY FROM STDIN with good rows and CopyDone (Sync and Flush inside, sometimes).
    CopyIn,
    /// COPY FROM STDIN with a bad row, then CopyDone.
    CopyBad,
    /// COPY FROM STDIN ended by CopyFail.
    CopyFail,
    /// COPY FROM STDIN with a bad row and a Sync in the same write: PostgreSQL answers
    /// the error with ReadyForQuery, and the Sync with a second one.
    CopyBadSync,
    /// COPY FROM STDIN started by Execute (good or bad rows).
    ExtCopyIn,
    /// COPY TO STDOUT (simple or extended).
    CopyOut,
    /// CopyData/CopyDone/CopyFail outside any COPY, then a query or a Sync.
    StrayCopy,
    /// FunctionCall of textcat.
    Function,
    /// Leaves: mid-message, mid-batch, mid-transaction, mid-COPY, answers unread, or
    /// with Terminate. The next step logs in again.
    Drop,
}

pub const KINDS: [Kind; 21] = [
    Kind::Select,
    Kind::Multi,
    Kind::QueryError,
    Kind::Pipelined,
    Kind::Begin,
    Kind::End,
    Kind::Extended,
    Kind::Batch,
    Kind::BatchError,
    Kind::FlushWait,
    Kind::SyncAlone,
    Kind::Close,
    Kind::CopyIn,
    Kind::CopyBad,
    Kind::CopyFail,
    Kind::CopyBadSync,
    Kind::ExtCopyIn,
    Kind::CopyOut,
    Kind::StrayCopy,
    Kind::Function,
    Kind::Drop,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Multi => "multi",
            Kind::QueryError => "query_error",
            Kind::Pipelined => "pipelined",
            Kind::Begin => "begin",
            Kind::End => "end",
            Kind::Extended => "extended",
            Kind::Batch => "batch",
            Kind::BatchError => "batch_error",
            Kind::FlushWait => "flush_wait",
            Kind::SyncAlone => "sync_alone",
            Kind::Close => "close",
            Kind::CopyIn => "copy_in",
            Kind::CopyBad => "copy_bad",
            Kind::CopyFail => "copy_fail",
            Kind::CopyBadSync => "copy_bad_sync",
            Kind::ExtCopyIn => "ext_copy_in",
            Kind::CopyOut => "copy_out",
            Kind::StrayCopy => "stray_copy",
            Kind::Function => "function",
            Kind::Drop => "drop",
        }
    }

    pub fn named(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// How often the kind is drawn, out of the sum, in and out of a transaction block.
    pub(super) fn weight(self, in_block: bool) -> u32 {
        match self {
            Kind::Begin if in_block => 0,
            Kind::Begin => 7,
            Kind::End if in_block => 16,
            Kind::End => 0,
            Kind::Select | Kind::Extended => 10,
            Kind::Multi | Kind::Pipelined | Kind::Batch => 5,
            Kind::QueryError | Kind::BatchError | Kind::FlushWait | Kind::CopyIn => 4,
            Kind::CopyOut | Kind::CopyBad | Kind::CopyFail | Kind::CopyBadSync => 3,
            Kind::ExtCopyIn | Kind::StrayCopy | Kind::SyncAlone => 3,
            Kind::Function | Kind::Drop | Kind::Close => 2,
        }
    }
}
