//! The statuses of erasure's errors (ErrorInfo domain "erasure.dsr-mesh").

use tonic::{Code, Status};

use crate::eraser::{EraseError, NotificationError};
use crate::store::StoreError;

use super::ERR;

pub(super) fn erase_status(e: EraseError) -> Status {
    match e {
        EraseError::Partial => ERR.status(
            Code::FailedPrecondition,
            "the subject map is partial; locate again when every system answers",
            "SUBJECT_MAP_PARTIAL",
        ),
        EraseError::NoPlan => {
            ERR.status(Code::NotFound, "no plan for this request", "PLAN_NOT_FOUND")
        }
        EraseError::System(e) => {
            ERR.status(Code::Unavailable, &e.to_string(), "SYSTEM_UNAVAILABLE")
        }
        EraseError::Store(e) => store_status(&e),
    }
}

pub(super) fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::NotFound => ERR.status(Code::NotFound, "not found", "NOT_FOUND"),
        StoreError::Db(_) | StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "erasure store failed");
            ERR.status(Code::Unavailable, "erasure storage unavailable", "STORAGE")
        }
    }
}

pub(super) fn notification_status(e: NotificationError) -> Status {
    match e {
        NotificationError::NotFound => ERR.status(
            Code::NotFound,
            "no such notification",
            "NOTIFICATION_NOT_FOUND",
        ),
        NotificationError::NotLawful(v) => ERR.status(
            Code::FailedPrecondition,
            &format!(
                "the transfer to this recipient is not lawful ({}): nothing may be sent",
                v.as_str()
            ),
            "TRANSFER_NOT_LAWFUL",
        ),
        NotificationError::Store(e) => store_status(&e),
    }
}
