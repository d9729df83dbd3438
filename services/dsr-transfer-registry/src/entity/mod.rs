//! sea-orm entities of the registry.
// The derive macros generate public items inside this private module.
#![allow(unreachable_pub)]

pub(crate) mod recipient;
