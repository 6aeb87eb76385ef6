//! Routing: what a call is, before any hook sees it.
//!
//! [`path`] turns any spelling the daemon accepts into one normalised path, [`query`] reads the
//! query string the way dockerd does (and refuses what it would read differently), [`json`] does
//! the same for JSON bodies, [`kind`] says which routes carry streams rather than JSON, and
//! [`pattern`] parses the `"METHOD /path"` patterns scripts register.

pub mod json;
pub mod kind;
pub mod path;
pub mod pattern;
pub mod query;

pub use path::{NormalPath, PathError};
pub use pattern::{Params, Pattern, PatternError};
