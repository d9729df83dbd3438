//! How `dsr` ends, for scripts: an exit code per kind of failure
//! (documented in `docs/cli.md`), carried by [`Failed`] through `anyhow`.

use std::process::ExitCode;

/// What kind of failure a command ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Bad arguments or configuration, or input the mesh refused as
    /// invalid (INVALID_ARGUMENT): fix the command.
    Usage = 2,
    /// What was asked for does not exist (NOT_FOUND).
    NotFound = 3,
    /// The mesh refused: not allowed (UNAUTHENTICATED, PERMISSION_DENIED),
    /// not now in this state (FAILED_PRECONDITION, ALREADY_EXISTS,
    /// ABORTED), or a request that ended rejected, cancelled or awaiting a
    /// case handler.
    Refused = 4,
    /// The mesh cannot answer now: not reachable, UNAVAILABLE, or
    /// RESOURCE_EXHAUSTED (a limit; the message says when to try again).
    /// Trying again later may succeed.
    Unavailable = 5,
    /// A wait ran out (`--timeout-secs`, DEADLINE_EXCEEDED).
    TimedOut = 6,
}

impl Exit {
    /// The exit class of a gRPC status code (`None`: a fault, exit 1).
    pub(crate) fn of_code(code: tonic::Code) -> Option<Self> {
        use tonic::Code as C;
        match code {
            C::InvalidArgument | C::OutOfRange => Some(Self::Usage),
            C::NotFound => Some(Self::NotFound),
            C::Unauthenticated
            | C::PermissionDenied
            | C::FailedPrecondition
            | C::AlreadyExists
            | C::Aborted => Some(Self::Refused),
            C::Unavailable | C::ResourceExhausted => Some(Self::Unavailable),
            C::DeadlineExceeded => Some(Self::TimedOut),
            C::Ok | C::Cancelled | C::Unknown | C::Unimplemented | C::Internal | C::DataLoss => {
                None
            }
        }
    }
}

/// A failure a script can tell apart: its message and its exit class.
#[derive(Debug)]
pub(crate) struct Failed {
    /// Which exit code.
    pub(crate) exit: Exit,
    /// What to tell the person running it.
    pub(crate) message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// `message`, ending the command with `exit`.
pub(crate) fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    Failed {
        exit,
        message: message.into(),
    }
    .into()
}

/// A status as lines a person can act on: code, message and reason, each
/// field violation, and when to try again (RetryInfo); ending the command
/// with the status's exit class.
pub(crate) fn explain(s: &tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt as _;
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let details = s.get_error_details();
    if let Some(info) = details.error_info() {
        text.push_str(&format!(" [{}]", info.reason));
    }
    if let Some(wait) = details.retry_info().and_then(|r| r.retry_delay) {
        text.push_str(&format!("\n  try again in {} s", wait.as_secs().max(1)));
    }
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    match Exit::of_code(s.code()) {
        Some(exit) => fail(exit, text),
        None => anyhow::anyhow!(text),
    }
}

/// The exit code for an error: the first [`Failed`] or gRPC status in its
/// chain, else 1.
pub(crate) fn code(e: &anyhow::Error) -> ExitCode {
    let exit = e.chain().find_map(|c| {
        c.downcast_ref::<Failed>()
            .map(|f| Some(f.exit))
            .or_else(|| {
                c.downcast_ref::<tonic::Status>()
                    .map(|s| Exit::of_code(s.code()))
            })
    });
    match exit.flatten() {
        Some(x) => ExitCode::from(x as u8),
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::{Exit, fail};

    #[test]
    fn every_failure_class_has_its_own_code_and_faults_exit_1() {
        let codes = |e: anyhow::Error| format!("{:?}", super::code(&e));
        assert_eq!(
            codes(fail(Exit::Usage, "x")),
            format!("{:?}", std::process::ExitCode::from(2))
        );
        assert_eq!(
            codes(anyhow::Error::new(tonic::Status::not_found("x")).context("while showing")),
            format!("{:?}", std::process::ExitCode::from(3))
        );
        assert_eq!(
            codes(tonic::Status::resource_exhausted("x").into()),
            format!("{:?}", std::process::ExitCode::from(5))
        );
        assert_eq!(
            codes(tonic::Status::internal("x").into()),
            format!("{:?}", std::process::ExitCode::FAILURE)
        );
        assert_eq!(
            codes(anyhow::anyhow!("disk full")),
            format!("{:?}", std::process::ExitCode::FAILURE)
        );
    }
}
