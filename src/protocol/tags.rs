//! The type bytes of regular messages, as enums: what a client sends (`Frontend`) and
//! what a server sends (`Backend`), after the login.

/// A message a client sends after the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// `Q`: a simple query (one or more statements), answered up to ReadyForQuery.
    Query,
    /// `P`, `B`, `D`, `E`, `C`: the extended protocol, answered up to the next Sync.
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    /// `S`: ends an extended batch; answered by ReadyForQuery.
    Sync,
    /// `H`: asks the server to send what it has; answered by nothing.
    Flush,
    /// `F`: a function call by OID, answered up to ReadyForQuery.
    FunctionCall,
    /// `d`, `c`, `f`: COPY FROM STDIN data, its end, its abort.
    CopyData,
    CopyDone,
    CopyFail,
    /// `X`: the client leaves.
    Terminate,
    /// Anything else (`p` after the login, or bytes that are not the protocol).
    Other(u8),
}

impl Frontend {
    #[inline]
    pub fn from_tag(tag: u8) -> Frontend {
        match tag {
            b'Q' => Frontend::Query,
            b'P' => Frontend::Parse,
            b'B' => Frontend::Bind,
            b'D' => Frontend::Describe,
            b'E' => Frontend::Execute,
            b'C' => Frontend::Close,
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'F' => Frontend::FunctionCall,
            b'd' => Frontend::CopyData,
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail,
            b'X' => Frontend::Terminate,
            other => Frontend::Other(other),
        }
    }
}

/// A message a server sends after the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `Z`: the server waits for the next request; carries the transaction status.
    ReadyForQuery,
    /// `E`
    ErrorResponse,
    /// `N`, `S`, `A`: may come at any time, answer nothing.
    NoticeResponse,
    ParameterStatus,
    NotificationResponse,
    /// `C`, `I`, `s`: a statement or portal ended.
    CommandComplete,
    EmptyQueryResponse,
    PortalSuspended,
    /// `T`, `D`, `t`, `n`: results and descriptions.
    RowDescription,
    DataRow,
    ParameterDescription,
    NoData,
    /// `1`, `2`, `3`: Parse, Bind and Close done.
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// `V`: a FunctionCall's result.
    FunctionCallResponse,
    /// `G`, `H`, `W`: a COPY starts.
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    /// `d`, `c`: COPY TO STDOUT data and its end.
    CopyData,
    CopyDone,
    /// Anything else (login messages, or bytes that are not the protocol).
    Other(u8),
}

impl Backend {
    #[inline]
    pub fn from_tag(tag: u8) -> Backend {
        match tag {
            b'Z' => Backend::ReadyForQuery,
            b'E' => Backend::ErrorResponse,
            b'N' => Backend::NoticeResponse,
            b'S' => Backend::ParameterStatus,
            b'A' => Backend::NotificationResponse,
            b'C' => Backend::CommandComplete,
            b'I' => Backend::EmptyQueryResponse,
            b's' => Backend::PortalSuspended,
            b'T' => Backend::RowDescription,
            b'D' => Backend::DataRow,
            b't' => Backend::ParameterDescription,
            b'n' => Backend::NoData,
            b'1' => Backend::ParseComplete,
            b'2' => Backend::BindComplete,
            b'3' => Backend::CloseComplete,
            b'V' => Backend::FunctionCallResponse,
            b'G' => Backend::CopyInResponse,
            b'H' => Backend::CopyOutResponse,
            b'W' => Backend::CopyBothResponse,
            b'd' => Backend::CopyData,
            b'c' => Backend::CopyDone,
            other => Backend::Other(other),
        }
    }

    /// The type byte.
    pub fn tag(self) -> u8 {
        match self {
            Backend::ReadyForQuery => b'Z',
            Backend::ErrorResponse => b'E',
            Backend::NoticeResponse => b'N',
            Backend::ParameterStatus => b'S',
            Backend::NotificationResponse => b'A',
            Backend::CommandComplete => b'C',
            Backend::EmptyQueryResponse => b'I',
            Backend::PortalSuspended => b's',
            Backend::RowDescription => b'T',
            Backend::DataRow => b'D',
            Backend::ParameterDescription => b't',
            Backend::NoData => b'n',
            Backend::ParseComplete => b'1',
            Backend::BindComplete => b'2',
            Backend::CloseComplete => b'3',
            Backend::FunctionCallResponse => b'V',
            Backend::CopyInResponse => b'G',
            Backend::CopyOutResponse => b'H',
            Backend::CopyBothResponse => b'W',
            Backend::CopyData => b'd',
            Backend::CopyDone => b'c',
            Backend::Other(tag) => tag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_tags_round_trip() {
        for tag in 0..=255u8 {
            assert_eq!(Backend::from_tag(tag).tag(), tag);
        }
    }

    #[test]
    fn frontend_tags() {
        assert_eq!(Frontend::from_tag(b'S'), Frontend::Sync);
        assert_eq!(Frontend::from_tag(b'd'), Frontend::CopyData);
        assert_eq!(Frontend::from_tag(b'p'), Frontend::Other(b'p'));
    }
}
