//! Manual systems: a vendor without an API (a law firm, an agent abroad, a
//! print house that answers by email), served as a `dsr.system.v1.DataSystem`
//! through the same handlers as a database ([`crate::grpc::Source`]).
//!
//! Each Locate, Erase, Rectify and Restrict becomes a task for the named
//! contact in the vendor's manifest ([`manifest`]), emailed with what to
//! look for or act on and the due date, inside the request's statutory
//! deadline with a margin. Until the vendor answers, Locate answers
//! UNAVAILABLE with ErrorInfo reason AWAITING_VENDOR and writes stay
//! RUNNING, so the request waits visibly on the vendor. The answer comes
//! through `dsr.manual.v1.ManualTasks` ([`api`]): a search's records, or a
//! write's count with the records kept; who attested it is recorded, and a
//! write's receipt is signed by this connector for the attestation
//! (`Receipt.attestation`), so reports and audits tell it from a receipt a
//! system signed itself. A background job ([`ManualSystem::tick`]) sends
//! reminders before a task is due, escalates an overdue one, and deletes
//! answered tasks after their keeping time. The emails are in Swedish and
//! English from a TOML file the company can replace ([`texts`]).

pub mod api;
mod grpc;
pub mod manifest;
mod system;
pub mod tasks;
pub mod texts;

pub use system::{Answer, AnswerError, ManualSystem, Round};
pub use tasks::Migrator;
