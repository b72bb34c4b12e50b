//! Sinks: the Secret object for a desired state, and where it is written.

pub mod cluster;
pub mod diff;
pub mod dir;
pub mod secret;
