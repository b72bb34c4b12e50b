//! Go text/template (engine v2) rendering for ExternalSecret templates.
