//! The privacy centre: the person's own web pages for exercising their
//! rights (seed policy 3.1, "an electronic request").
//!
//! A small web service in the mesh, rendered on the server: plain HTML
//! forms that work without JavaScript, in Swedish and English from a text
//! file the company edits ([`texts`]), calling the mesh over gRPC as any
//! portal would ([`mesh`]): identity for the one-time code, the
//! orchestrator to submit and follow the request, export to fetch the
//! answer. Each browser session calls with a token of its own subject, so
//! the mesh's own scoping (a portal reads only what it submitted) keeps one
//! person from another's request. No personal data goes in a URL, a log
//! line or a cookie: the session cookie is a random key to server-side
//! state ([`sessions`]) that holds no identity either.
#![forbid(unsafe_code)]

pub mod console;
pub mod mesh;
pub mod oidc;
pub mod pages;
pub mod sessions;
pub mod texts;
pub mod web;

/// The issuer the privacy centre's tokens carry by default.
pub const ISSUER: &str = "dsr-portal";
