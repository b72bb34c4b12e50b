//! Sources: where ExternalSecrets, stores and the objects they reference come from.

pub mod dir;
pub mod cluster;
pub mod git;
pub mod watch;
