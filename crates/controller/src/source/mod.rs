//! Sources: where ExternalSecrets, stores and the objects they reference come from.

pub mod cluster;
pub mod dir;
pub mod git;
pub mod watch;
