//! Sinks: the Secret object for a desired state, and where it is written.

pub mod dir;
pub mod secret;
pub mod cluster;
pub mod diff;
