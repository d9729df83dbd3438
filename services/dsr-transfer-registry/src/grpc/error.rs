//! The one mapping from the registry's errors to gRPC statuses: fixed
//! messages, a `google.rpc.ErrorInfo` reason, and `BadRequest` field
//! violations for bad input. No personal data (the registry holds none about
//! data subjects; recipient ids are organisation slugs).

use dsr_domain::transfer::FieldViolation;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::registry::Error;

const DOMAIN: &str = "transfer.dsr-mesh";

pub(crate) fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let mut details = ErrorDetails::with_error_info("INVALID_ARGUMENT", DOMAIN, []);
    for v in violations {
        details.add_bad_request_violation(v.field, v.description);
    }
    Status::with_error_details(Code::InvalidArgument, "invalid request", details)
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let (code, message, reason) = match &e {
            Error::InvalidArgument(v) => return invalid_argument(v.clone()),
            Error::NotFound => (Code::NotFound, "recipient not found", "RECIPIENT_NOT_FOUND"),
            Error::AlreadyExists => (
                Code::AlreadyExists,
                "recipient already exists",
                "RECIPIENT_EXISTS",
            ),
            Error::RevisionMismatch => (
                Code::Aborted,
                "recipient changed since the expected revision",
                "REVISION_MISMATCH",
            ),
            Error::Storage(err) => {
                tracing::error!(error = %err, "storage failure");
                (Code::Internal, "internal error", "INTERNAL")
            }
        };
        Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(reason, DOMAIN, []),
        )
    }
}
