//! DSR Mesh end to end, over real gRPC on loopback, through the `dsr`
//! binary, one module per scenario:
//!
//! - [`access`]: under `dsr up`, an access request from the command line
//!   completes with the JSON, the HTML report and the manifest, holding
//!   every Art. 15 item and data from a system reached only through
//!   identity expansion; the portability package leaves out what the person
//!   did not provide; bad submissions are refused naming the field, and
//!   nothing is recorded;
//! - [`resilience`]: with every service its own `dsr serve` process (as on
//!   Kubernetes), a system that is down makes the request retry, visibly,
//!   until it returns; an orchestrator killed (SIGKILL) in the middle of a
//!   step resumes after restart with no step done twice; two orchestrators
//!   on one database complete 200 concurrent requests with no step done
//!   twice; an erasure whose orchestrator and erasure service are killed
//!   while planning and while executing reaches every planned record once;
//!   forty erasures survive a CRM and an erasure service killed again and
//!   again;
//! - [`erasure`]: the plan (erase, anonymise, retain with the AML ground
//!   until the end of the relationship + 5 years, the open contract),
//!   verified receipts, a second request changing nothing, replay after a
//!   restored backup touching nothing else, a retention sweep;
//! - [`writes`]: an objection to direct marketing holding after a
//!   re-import, a rectification, a restriction and its lift, the Art. 19
//!   notifications;
//! - [`tracing`]: an access request and an erasure exported to an OTLP
//!   receiver, each one trace from the portal's Submit across every service
//!   and system it reached, no identity value in any span or log line (at
//!   debug), the metrics exported;
//! - [`deferred`], [`demo`], [`verification`], [`letters`], [`incidents`],
//!   [`retention`]: a deferred erasure on its date, the README's demo
//!   people, stronger verification, the letters in the person's language, a
//!   breach and a complaint, no identity left once retention passed.
//!
//! SQLite by default; with `DSR_TEST_POSTGRES_URL` every test runs on a
//! fresh PostgreSQL database (a schema per service), dropped at the end.
//! The tests start many processes and take turns ([`support::TURN`]).
//!
//! The binary is the one cargo built for this profile (`target/<profile>/dsr`,
//! which `cargo test --workspace` builds), or `DSR_BIN`; see
//! [`support::DSR`].

mod support;

mod access;
mod deferred;
mod demo;
mod erasure;
mod incidents;
mod letters;
mod resilience;
mod retention;
mod tracing;
mod verification;
mod writes;
