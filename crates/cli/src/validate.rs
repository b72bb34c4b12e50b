//! `refsync validate`: offline checks of a manifest tree, for pull requests. No provider calls.

use std::process::ExitCode;

use refsync_core::manifest::ManifestSet;
use refsync_core::validate::{Finding, validate};

use crate::args::{OutputFormat, ValidateArgs};

pub fn run(args: ValidateArgs) -> ExitCode {
    let set = match ManifestSet::load_dir(&args.manifests, &args.namespace) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings = validate(&set, &crate::providers::registry());
    let objects = set.all_external_secrets().len()
        + set.secret_stores.len()
        + set.cluster_secret_stores.len()
        + set.cluster_external_secrets.len();
    match args.output {
        OutputFormat::Json => {
            let doc = serde_json::json!({ "objects": objects, "errors": findings.len(), "findings": findings });
            crate::output::stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            ));
        }
        OutputFormat::Text => {
            let mut text: String = findings.iter().map(|f| line(f) + "\n").collect();
            text.push_str(&format!(
                "{objects} object(s) checked, {} error(s)\n",
                findings.len()
            ));
            crate::output::stdout(&text);
        }
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn line(f: &Finding) -> String {
    let what = match (f.kind.as_str(), f.namespace.as_str()) {
        ("", _) => String::new(),
        (k, "") => format!("{k} {}: ", f.name),
        (k, ns) => format!("{k} {ns}/{}: ", f.name),
    };
    let file = if f.file.is_empty() {
        String::new()
    } else {
        format!("{}: ", f.file)
    };
    format!("error: {file}{what}{}", f.message)
}
