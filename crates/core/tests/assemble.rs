//! The assemble step against ESO's semantics, with exact bytes.

use refsync_core::api::ExternalSecret;
use refsync_core::assemble::{
    Fetched, FetchedFrom, Outcome, TemplateSourceKind, TemplateSources, assemble, provider_data,
};
use refsync_core::{Error, ErrorKind, PropertyMode, SecretBytes, SecretMap};

fn es(yaml: &str) -> ExternalSecret {
    let mut e: ExternalSecret = refsync_core::manifest::yaml_from_str(yaml).unwrap();
    e.metadata.namespace.get_or_insert_with(|| "ns".into());
    e
}

fn raw(v: &str) -> Result<(SecretBytes, PropertyMode), Error> {
    Ok((SecretBytes::from(v), PropertyMode::Gjson))
}

fn map(pairs: &[(&str, &str)]) -> SecretMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::from(*v)))
        .collect()
}

fn written(o: Outcome) -> refsync_core::assemble::DesiredSecret {
    match o {
        Outcome::Write(d) => d,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn data(d: &refsync_core::assemble::DesiredSecret) -> Vec<(String, String)> {
    d.data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.expose().to_vec()).unwrap()))
        .collect()
}

const HEAD: &str = "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: app, namespace: ns, labels: {team: a}, annotations: {note: x}}\n";

#[test]
fn data_property_decoding_and_override_order() {
    let e = es(&format!(
        "{HEAD}spec:
  secretStoreRef: {{name: s}}
  dataFrom:
    - extract: {{key: db}}
  data:
    - secretKey: user
      remoteRef: {{key: db, property: creds.user}}
    - secretKey: cert
      remoteRef: {{key: blob, decodingStrategy: Base64}}
    - secretKey: auto
      remoteRef: {{key: maybe, decodingStrategy: Auto}}
    - secretKey: port
      remoteRef: {{key: db, property: port}}
"
    ));
    let db = r#"{"creds":{"user":"admin"},"port":5432,"port2":"x"}"#;
    let fetched = Fetched {
        data: vec![raw(db), raw("aGVsbG8="), raw("plain text"), raw(db)],
        data_from: vec![Ok(FetchedFrom::Extract(
            SecretBytes::from(db),
            PropertyMode::Gjson,
        ))],
    };
    let pd = provider_data(&e, &fetched).unwrap();
    let d = written(assemble(&e, pd, &TemplateSources::default()).unwrap());
    assert_eq!(
        data(&d),
        vec![
            ("auto".into(), "plain text".into()),
            ("cert".into(), "hello".into()),
            ("creds".into(), r#"{"user":"admin"}"#.into()),
            ("port".into(), "5432".into()),
            ("port2".into(), "x".into()),
            ("user".into(), "admin".into()),
        ]
    );
    // Without a template, the ExternalSecret's labels and annotations are copied.
    assert_eq!(d.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(d.annotations.get("note").map(String::as_str), Some("x"));
    assert_eq!(d.name, "app");
    assert_eq!(d.type_, None);
}

#[test]
fn missing_key_is_an_error_under_retain_and_skipped_under_delete() {
    let spec = "spec:
  secretStoreRef: {name: s}
  data:
    - secretKey: a
      remoteRef: {key: gone}
";
    let fetched = || Fetched {
        data: vec![Err(Error::not_found("secret gone not found"))],
        data_from: vec![],
    };
    let e = es(&format!("{HEAD}{spec}"));
    let err = provider_data(&e, &fetched()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(
        err.message,
        "error processing spec.data[0] (key: gone): secret gone not found"
    );

    let e = es(&format!(
        "{HEAD}{spec}  target: {{deletionPolicy: Delete}}\n"
    ));
    let pd = provider_data(&e, &fetched()).unwrap();
    assert!(pd.is_empty());
    assert_eq!(
        assemble(&e, pd, &TemplateSources::default()).unwrap(),
        Outcome::Delete { name: "app".into() }
    );

    // A transient error is never treated as "gone".
    let transient = Fetched {
        data: vec![Err(Error::transient("connection refused"))],
        data_from: vec![],
    };
    assert_eq!(
        provider_data(&e, &transient).unwrap_err().kind,
        ErrorKind::Transient
    );
}

#[test]
fn find_with_nothing_retains_and_converts_keys() {
    let e = es(&format!(
        "{HEAD}spec:\n  secretStoreRef: {{name: s}}\n  dataFrom:\n    - find: {{name: {{regexp: nothing}}}}\n"
    ));
    let f = Fetched {
        data: vec![],
        data_from: vec![Ok(FetchedFrom::Find(SecretMap::new()))],
    };
    let pd = provider_data(&e, &f).unwrap();
    assert_eq!(
        assemble(&e, pd, &TemplateSources::default()).unwrap(),
        Outcome::Retain { name: "app".into() }
    );

    let e = es(&format!(
        "{HEAD}spec:\n  secretStoreRef: {{name: s}}\n  dataFrom:\n    - find: {{name: {{regexp: .}}, conversionStrategy: Unicode}}\n    - find: {{name: {{regexp: .}}}}\n"
    ));
    let found = map(&[("path/to/a", "1"), ("b@c", "2")]);
    let f = Fetched {
        data: vec![],
        data_from: vec![
            Ok(FetchedFrom::Find(found.clone())),
            Ok(FetchedFrom::Find(found)),
        ],
    };
    let d = written(
        assemble(
            &e,
            provider_data(&e, &f).unwrap(),
            &TemplateSources::default(),
        )
        .unwrap(),
    );
    assert_eq!(
        d.data.keys().cloned().collect::<Vec<_>>(),
        vec!["b_U0040_c", "b_c", "path_U002f_to_U002f_a", "path_to_a"]
    );
}

#[test]
fn rewrite_regexp_then_transform() {
    let e = es(&format!(
        r#"{HEAD}spec:
  secretStoreRef: {{name: s}}
  dataFrom:
    - find: {{name: {{regexp: .}}}}
      rewrite:
        - regexp: {{source: "^team/(?P<rest>.*)$", target: "app-${{rest}}"}}
        - transform: {{template: "{{{{ .value | upper }}}}"}}
"#
    ));
    let f = Fetched {
        data: vec![],
        data_from: vec![Ok(FetchedFrom::Find(map(&[
            ("team/db", "v1"),
            ("team/api", "v2"),
        ])))],
    };
    let d = written(
        assemble(
            &e,
            provider_data(&e, &f).unwrap(),
            &TemplateSources::default(),
        )
        .unwrap(),
    );
    assert_eq!(
        data(&d),
        vec![
            ("APP-API".into(), "v2".into()),
            ("APP-DB".into(), "v1".into())
        ]
    );

    // A rewrite producing an invalid key fails naming the entry.
    let e = es(&format!(
        "{HEAD}spec:\n  secretStoreRef: {{name: s}}\n  dataFrom:\n    - find: {{name: {{regexp: .}}}}\n      rewrite:\n        - regexp: {{source: x, target: 'a/b'}}\n"
    ));
    let f = Fetched {
        data: vec![],
        data_from: vec![Ok(FetchedFrom::Find(map(&[("x", "v")])))],
    };
    let err = provider_data(&e, &f).unwrap_err();
    assert!(
        err.message
            .starts_with("error processing spec.dataFrom[0].find: key has invalid character /"),
        "{}",
        err.message
    );
}

#[test]
fn template_v2_with_template_from_and_merge_policy() {
    let e = es(&format!(
        r#"{HEAD}spec:
  secretStoreRef: {{name: s}}
  target:
    name: rendered
    template:
      type: kubernetes.io/basic-auth
      mergePolicy: Merge
      metadata:
        labels: {{tier: "{{{{ .user | lower }}}}"}}
      data:
        url: "postgres://{{{{ .user }}}}:{{{{ .password }}}}@db"
      templateFrom:
        - configMap:
            name: tpl
            items:
              - key: config.yaml
              - key: multi
                templateAs: KeysAndValues
        - secret:
            name: tpl-secret
            items:
              - key: extra
        - literal: "lit-{{{{ .user }}}}: '{{{{ .password | b64enc }}}}'"
          target: Annotations
  data:
    - secretKey: user
      remoteRef: {{key: u}}
    - secretKey: password
      remoteRef: {{key: p}}
"#
    ));
    let f = Fetched {
        data: vec![raw("ADMIN"), raw("pw")],
        data_from: vec![],
    };
    let mut sources = TemplateSources::default();
    sources.entries.insert(
        (
            TemplateSourceKind::ConfigMap,
            "tpl".into(),
            "config.yaml".into(),
        ),
        SecretBytes::from("user: {{ .user }}"),
    );
    sources.entries.insert(
        (TemplateSourceKind::ConfigMap, "tpl".into(), "multi".into()),
        SecretBytes::from("k1: '{{ .user }}-1'\nk2: v2"),
    );
    sources.entries.insert(
        (
            TemplateSourceKind::Secret,
            "tpl-secret".into(),
            "extra".into(),
        ),
        SecretBytes::from("x{{ .password }}x"),
    );
    let d = written(assemble(&e, provider_data(&e, &f).unwrap(), &sources).unwrap());
    assert_eq!(
        data(&d),
        vec![
            ("config.yaml".into(), "user: ADMIN".into()),
            ("extra".into(), "xpwx".into()),
            ("k1".into(), "ADMIN-1".into()),
            ("k2".into(), "v2".into()),
            ("password".into(), "pw".into()),
            ("url".into(), "postgres://ADMIN:pw@db".into()),
            ("user".into(), "ADMIN".into()),
        ]
    );
    assert_eq!(d.name, "rendered");
    assert_eq!(d.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(d.labels.get("tier").map(String::as_str), Some("admin"));
    assert_eq!(
        d.annotations.get("lit-ADMIN").map(String::as_str),
        Some("cHc=")
    );
    // With a template, the ExternalSecret's own labels are not copied.
    assert!(!d.labels.contains_key("team"));
}

#[test]
fn template_errors_name_the_field_and_hide_values() {
    let e = es(&format!(
        "{HEAD}spec:\n  secretStoreRef: {{name: s}}\n  target:\n    template:\n      data:\n        out: '{{{{ .missing }}}}'\n  data:\n    - secretKey: password\n      remoteRef: {{key: p}}\n"
    ));
    let f = Fetched {
        data: vec![raw("canary-secret-value")],
        data_from: vec![],
    };
    let err = assemble(
        &e,
        provider_data(&e, &f).unwrap(),
        &TemplateSources::default(),
    )
    .unwrap_err();
    assert!(
        err.message.starts_with("spec.target.template.data.out: "),
        "{}",
        err.message
    );
    assert!(err.message.contains("missing"), "{}", err.message);
    assert!(!format!("{err} {err:?}").contains("canary-secret-value"));
}

#[test]
fn template_without_data_keeps_all_keys_and_immutable() {
    let e = es(&format!(
        "{HEAD}spec:\n  secretStoreRef: {{name: s}}\n  target:\n    immutable: true\n    template:\n      type: Opaque\n  data:\n    - secretKey: a\n      remoteRef: {{key: a}}\n"
    ));
    let f = Fetched {
        data: vec![raw("1")],
        data_from: vec![],
    };
    let d = written(
        assemble(
            &e,
            provider_data(&e, &f).unwrap(),
            &TemplateSources::default(),
        )
        .unwrap(),
    );
    assert_eq!(data(&d), vec![("a".into(), "1".into())]);
    assert!(d.immutable);
}

#[test]
fn plan_reports_every_invalid_field() {
    let e = es(&format!(
        "{HEAD}spec:\n  refreshInterval: 1d\n  target: {{creationPolicy: Merge, deletionPolicy: Delete}}\n  data:\n    - secretKey: a\n      remoteRef: {{key: a}}\n    - secretKey: a\n      remoteRef: {{key: ''}}\n  dataFrom:\n    - find: {{name: {{regexp: '(unclosed'}}}}\n"
    ));
    let errs = refsync_core::plan::plan(&e).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
    let all = text.join("\n");
    for want in [
        "spec.refreshInterval",
        "deletionPolicy=Delete must not be used when creationPolicy=Merge",
        "spec.data[1].secretKey: duplicate secretKey",
        "spec.data[1].remoteRef.key is required",
        "spec.dataFrom[0].find.name.regexp",
        "spec.secretStoreRef is required",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}
