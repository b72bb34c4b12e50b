//! Tests for the template engine. Keys, certificates and PKCS#12 files are generated at
//! test run time; nothing secret is committed.

use super::*;

fn vals(pairs: &[(&str, &[u8])]) -> TemplateValues {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn r(src: &str, pairs: &[(&str, &[u8])]) -> Vec<u8> {
    match render("t", src, &vals(pairs)) {
        Ok(v) => v,
        Err(e) => panic!("render {src:?} failed: {e}"),
    }
}

fn rs(src: &str, pairs: &[(&str, &[u8])]) -> String {
    String::from_utf8(r(src, pairs)).expect("utf8 output")
}

fn fails(src: &str, pairs: &[(&str, &[u8])]) -> TemplateError {
    match render("t", src, &vals(pairs)) {
        Ok(v) => panic!(
            "render {src:?} should fail, got {:?}",
            String::from_utf8_lossy(&v)
        ),
        Err(e) => e,
    }
}

// ------------------------------------------------------------------ engine basics

#[test]
fn plain_values_and_missing_key() {
    assert_eq!(rs("{{ .a }}-{{ .b }}", &[("a", b"x"), ("b", b"y")]), "x-y");
    let e = fails("{{ .nope }}", &[("a", b"x")]);
    assert!(matches!(e, TemplateError::Exec { .. }), "{e:?}");
    assert!(e.to_string().contains("nope"));
}

#[test]
fn binary_values_roundtrip_losslessly() {
    let bin: Vec<u8> = (0u8..=255).chain("\u{10FFFF}".bytes()).collect();
    assert_eq!(r("{{ .b }}", &[("b", &bin)]), bin);
    assert_eq!(rs("{{ len .b }}", &[("b", &bin)]), (256 + 4).to_string());
    assert_eq!(
        rs("{{ .b | b64enc }}", &[("b", &[0xff, 0x00, 0xfe])]),
        "/wD+"
    );
    assert_eq!(r("{{ \"/wD+\" | b64dec }}", &[]), vec![0xff, 0x00, 0xfe]);
    // template source with escape-block characters survives too
    assert_eq!(
        rs("\u{10FF80}{{ \"\u{10FFFF}\" }}", &[]),
        "\u{10FF80}\u{10FFFF}"
    );
}

#[test]
fn check_parses_only() {
    assert!(check("k", "{{ .a | upper }}").is_ok());
    assert!(matches!(
        check("k", "{{ .a "),
        Err(TemplateError::Parse { .. })
    ));
    let e = check("k", "{{ nosuchfn .a }}");
    assert!(matches!(e, Err(TemplateError::Parse { .. })), "{e:?}");
    for f in UNSUPPORTED_FUNCTIONS {
        assert!(
            check("k", &format!("{{{{ {f} }}}}")).is_err(),
            "{f} should be unknown"
        );
    }
    for f in ["env", "expandenv", "getHostByName"] {
        assert!(check("k", &format!("{{{{ {f} \"x\" }}}}")).is_err());
    }
}

#[test]
fn render_json_sees_value() {
    let data = serde_json::json!({"value": "my-key"});
    let out = render_json(
        "rewrite",
        "ENV_{{ .value | upper | replace \"-\" \"_\" }}",
        &data,
    );
    assert_eq!(out.expect("render"), b"ENV_MY_KEY");
    let data = serde_json::json!({"value": "username"});
    let out = render_json("t", "secrets/{{ .value | upper }}", &data);
    assert_eq!(out.expect("render"), b"secrets/USERNAME");
    let data = serde_json::json!({"n": 3, "f": 1.5, "l": [1, "a"]});
    let out = render_json("t", "{{ .n }} {{ .f }} {{ .l | toJson }}", &data);
    assert_eq!(out.expect("render"), b"3 1.5 [1,\"a\"]");
}

// ------------------------------------------------------------------ sprig functions

#[test]
fn string_functions() {
    let cases: &[(&str, &str)] = &[
        ("{{ upper \"abc\" }}", "ABC"),
        ("{{ lower \"ABC\" }}", "abc"),
        ("{{ title \"hello world\" }}", "Hello World"),
        ("{{ untitle \"Hello World\" }}", "hello world"),
        ("{{ trim \"  a b \\n\" }}", "a b"),
        ("{{ trimAll \"$\" \"$5.00$\" }}", "5.00"),
        ("{{ trimSuffix \"-\" \"a-\" }}", "a"),
        ("{{ trimPrefix \"-\" \"-a\" }}", "a"),
        ("{{ nospace \"a b  c\" }}", "abc"),
        ("{{ repeat 3 \"ab\" }}", "ababab"),
        ("{{ substr 1 3 \"hello\" }}", "el"),
        ("{{ trunc 2 \"hello\" }}", "he"),
        ("{{ trunc -2 \"hello\" }}", "lo"),
        ("{{ abbrev 5 \"hello world\" }}", "he..."),
        ("{{ contains \"ll\" \"hello\" }}", "true"),
        ("{{ hasPrefix \"oci://\" \"oci://x\" }}", "true"),
        ("{{ hasSuffix \"x\" \"abc\" }}", "false"),
        ("{{ quote \"a\\\"b\" 1 }}", "\"a\\\"b\" \"1\""),
        ("{{ squote \"a\" }}", "'a'"),
        ("{{ cat \"a\" 1 \"b\" }}", "a 1 b"),
        ("{{ indent 2 \"a\\nb\" }}", "  a\n  b"),
        ("{{ nindent 2 \"a\" }}", "\n  a"),
        (
            "{{ replace \"postgres://\" \"postgresql://\" \"postgres://h/db\" }}",
            "postgresql://h/db",
        ),
        ("{{ plural \"one\" \"many\" 2 }}", "many"),
        ("{{ toString 42 }}", "42"),
        ("{{ split \"$\" \"a$b\" }}", "map[_0:a _1:b]"),
        ("{{ (split \"$\" \"a$b\")._1 }}", "b"),
        ("{{ splitList \",\" \"a,b\" | join \"|\" }}", "a|b"),
        ("{{ splitn \"$\" 2 \"a$b$c\" }}", "map[_0:a _1:b$c]"),
        ("{{ list \"b\" \"a\" | sortAlpha }}", "[a b]"),
        ("{{ list 1 \"a\" | join \",\" }}", "1,a"),
        ("{{ regexMatch \"^[a-z]+$\" \"abc\" }}", "true"),
        ("{{ regexFind \"[0-9]+\" \"ab12cd34\" }}", "12"),
        ("{{ regexFindAll \"[0-9]\" \"a1b2c3\" -1 }}", "[1 2 3]"),
        (
            "{{ regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\" }}",
            "-W-xxW-",
        ),
        (
            "{{ regexReplaceAllLiteral \"a(x*)b\" \"-ab-\" \"${1}\" }}",
            "-${1}-",
        ),
        ("{{ regexSplit \"z+\" \"pizza\" -1 }}", "[pi a]"),
        ("{{ regexQuoteMeta \"a.b\" }}", "a\\.b"),
        (
            "{{ base \"/a/b.txt\" }} {{ dir \"/a/b.txt\" }} {{ ext \"b.txt\" }} {{ clean \"a//b/../c\" }}",
            "b.txt /a .txt a/c",
        ),
        ("{{ printf \"%s=%d\" \"a\" 1 }}", "a=1"),
        ("{{ print \"a\" 1 }}", "a1"),
        ("{{ hello }}", "Hello!"),
    ];
    for (src, want) in cases {
        assert_eq!(rs(src, &[]), *want, "{src}");
    }
}

#[test]
fn number_and_list_functions() {
    let cases: &[(&str, &str)] = &[
        ("{{ add 1 2 3 }}", "6"),
        ("{{ add1 \"41\" }}", "42"),
        (
            "{{ sub 5 2 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod 7 2 }}",
            "3 24 3 1",
        ),
        ("{{ max 1 5 3 }} {{ min 4 2 }}", "5 2"),
        (
            "{{ atoi \"12\" }} {{ int \"0x10\" }} {{ int64 3.9 }}",
            "12 16 3",
        ),
        ("{{ float64 \"1.5\" }}", "1.5"),
        (
            "{{ ceil 1.2 }} {{ floor 1.8 }} {{ round 3.14159 2 }}",
            "2 1 3.14",
        ),
        ("{{ until 3 }}", "[0 1 2]"),
        ("{{ untilStep 0 10 3 }}", "[0 3 6 9]"),
        (
            "{{ seq 3 }}|{{ seq 2 4 }}|{{ seq 5 -2 1 }}|{{ seq 0 }}",
            "1 2 3|2 3 4|5 3 1|1 0",
        ),
        (
            "{{ $l := list 1 2 }}{{ append $l 3 }} {{ prepend $l 0 }}",
            "[1 2 3] [0 1 2]",
        ),
        (
            "{{ first (list 1 2) }} {{ last (list 1 2) }} {{ rest (list 1 2 3) }} {{ initial (list 1 2 3) }}",
            "1 2 [2 3] [1 2]",
        ),
        (
            "{{ reverse (list 1 2 3) }} {{ uniq (list 1 1 2) }} {{ without (list 1 2 3) 2 }}",
            "[3 2 1] [1 2] [1 3]",
        ),
        (
            "{{ has 2 (list 1 2) }} {{ slice (list 1 2 3) 1 }} {{ concat (list 1) (list 2) }}",
            "true [2 3] [1 2]",
        ),
        (
            "{{ chunk 2 (list 1 2 3) }} {{ compact (list 1 \"\" 0 2) }}",
            "[[1 2] [3]] [1 2]",
        ),
        (
            "{{ default \"d\" \"\" }} {{ default \"d\" \"v\" }} {{ empty \"\" }} {{ coalesce \"\" \"x\" }}",
            "d v true x",
        ),
        (
            "{{ ternary \"y\" \"n\" true }} {{ all 1 \"a\" }} {{ any 0 \"\" }}",
            "y true false",
        ),
        (
            "{{ $d := dict \"a\" 1 \"b\" \"x\" }}{{ get $d \"b\" }} {{ hasKey $d \"a\" }} {{ keys $d }} {{ values $d }}",
            "x true [a b] [1 x]",
        ),
        (
            "{{ $d := dict \"a\" 1 }}{{ $d = set $d \"b\" 2 }}{{ $d }} {{ unset $d \"a\" }}",
            "map[a:1 b:2] map[b:2]",
        ),
        (
            "{{ pick (dict \"a\" 1 \"b\" 2) \"a\" }} {{ omit (dict \"a\" 1 \"b\" 2) \"a\" }}",
            "map[a:1] map[b:2]",
        ),
        (
            "{{ merge (dict \"a\" 1) (dict \"a\" 2 \"b\" 3) }} {{ mergeOverwrite (dict \"a\" 1) (dict \"a\" 2) }}",
            "map[a:1 b:3] map[a:2]",
        ),
        (
            "{{ dig \"a\" \"b\" \"def\" (dict \"a\" (dict \"b\" \"v\")) }} {{ dig \"x\" \"def\" (dict) }}",
            "v def",
        ),
        ("{{ pluck \"a\" (dict \"a\" 1) (dict \"a\" 2) }}", "[1 2]"),
        (
            "{{ kindOf \"a\" }} {{ kindOf (list) }} {{ kindIs \"map\" (dict) }} {{ deepEqual (list 1) (list 1) }}",
            "string slice true true",
        ),
        ("{{ toStrings (list 1 \"a\") }}", "[1 a]"),
    ];
    for (src, want) in cases {
        assert_eq!(rs(src, &[]), *want, "{src}");
    }
}

#[test]
fn encoding_and_hash_functions() {
    let cases: &[(&str, &str)] = &[
        ("{{ b64enc \"hello\" }}", "aGVsbG8="),
        ("{{ b64dec \"aGVsbG8=\" }}", "hello"),
        ("{{ b64dec \"aGVs\\nbG8=\" }}", "hello"),
        (
            "{{ b64dec \"not base64!\" }}",
            "illegal base64 data at input byte 3",
        ),
        (
            "{{ b64dec \"aGVsbG8\" }}",
            "illegal base64 data at input byte 4",
        ),
        (
            "{{ b64dec \"aGVsbG8=x\" }}",
            "illegal base64 data at input byte 8",
        ),
        ("{{ b32enc \"hello\" }}", "NBSWY3DP"),
        ("{{ b32dec \"NBSWY3DP\" }}", "hello"),
        ("{{ b32enc \"hi\" }}", "NBUQ===="),
        ("{{ b32dec \"NBUQ====\" }}", "hi"),
        ("{{ hexdec \"6869\" }}", "hi"),
        (
            "{{ hexdec \"zz\" }}",
            "encoding/hex: invalid byte: U+007A 'z'",
        ),
        (
            "{{ hexdec \"686\" }}",
            "encoding/hex: odd length hex string",
        ),
        (
            "{{ sha1sum \"abc\" }}",
            "a9993e364706816aba3e25717850c26c9cd0d89d",
        ),
        (
            "{{ sha256sum \"abc\" }}",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        ("{{ sha512sum \"\" | trunc 16 }}", "cf83e1357eefb8bd"),
        ("{{ adler32sum \"Wikipedia\" }}", "300286872"),
        (
            "{{ htpasswd \"u\" \"p\" \"sha\" }}",
            "u:{SHA}UWuXg/ylF+7L0dBk2i0WUxCxl1k=",
        ),
        ("{{ htpasswd \"a:b\" \"p\" }}", "invalid username: a:b"),
        (
            "{{ toJson (dict \"b\" \"<&>\" \"a\" (list 1 2.5 true nil)) }}",
            "{\"a\":[1,2.5,true,null],\"b\":\"\\u003c\\u0026\\u003e\"}",
        ),
        ("{{ toRawJson (dict \"b\" \"<&>\") }}", "{\"b\":\"<&>\"}"),
        (
            "{{ toPrettyJson (dict \"a\" (list 1)) }}",
            "{\n  \"a\": [\n    1\n  ]\n}",
        ),
        ("{{ (fromJson \"{\\\"a\\\":{\\\"b\\\":2}}\").a.b }}", "2"),
        (
            "{{ randAlphaNum 12 | len }} {{ randNumeric 4 | regexMatch \"^[0-9]{4}$\" }}",
            "12 true",
        ),
        (
            "{{ uuidv4 | regexMatch \"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$\" }}",
            "true",
        ),
        ("{{ randBytes 6 | b64dec | len }}", "6"),
        (
            "{{ now | regexMatch \"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ \\\\+0000 UTC m=\\\\+[0-9.]+$\" }}",
            "true",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(rs(src, &[]), *want, "{src}");
    }
    // bcrypt: Go's "$2a$10$" format, verifiable.
    let h = rs("{{ bcrypt .p }}", &[("p", b"s3cret")]);
    assert!(h.starts_with("$2a$10$"), "{h}");
    assert!(bcrypt::verify("s3cret", &h).unwrap_or(false));
    // hashes see raw bytes
    assert_eq!(
        rs("{{ .b | sha256sum }}", &[("b", &[0xff])]),
        "a8100ae6aa1940d0b663bb31cd466142ebbdbd5187131b92d93818987832eb89"
    );
}

#[test]
fn yaml_functions() {
    let cases: &[(&str, &str)] = &[
        (
            "{{ toYaml (dict \"b\" (list 1 \"x\") \"a\" \"s\") }}",
            "a: s\nb:\n- 1\n- x",
        ),
        (
            "{{ toYaml (dict \"a\" (dict \"b\" \"true\" \"c\" \"\")) }}",
            "a:\n  b: \"true\"\n  c: \"\"",
        ),
        ("{{ toYaml (dict \"k\" \"a: b\") }}", "k: 'a: b'"),
        ("{{ toYaml (dict \"k\" \"l1\\nl2\") }}", "k: |-\n  l1\n  l2"),
        (
            "{{ toYaml (list (dict \"a\" 1 \"b\" 2)) }}",
            "- a: 1\n  b: 2",
        ),
        ("{{ (fromYaml \"a:\\n  b: c\").a.b }}", "c"),
        ("{{ (fromYaml \"a: [\").Error | empty }}", "false"),
    ];
    for (src, want) in cases {
        assert_eq!(rs(src, &[]), *want, "{src}");
    }
}

// ------------------------------------------------------------------ ESO snippets

#[test]
fn snippet_multiline_and_merge_templates() {
    let v: &[(&str, &[u8])] = &[
        ("user", b"admin"),
        ("password", b"p@ss"),
        ("dburl", b"postgres://db:5432/app"),
        ("uri", b"oci://registry"),
    ];
    let config = "datasources:\n- name: Graphite\n  password: \"{{ .password }}\"\n  user: \"{{ .user }}\"\n";
    assert_eq!(
        rs(config, v),
        "datasources:\n- name: Graphite\n  password: \"p@ss\"\n  user: \"admin\"\n"
    );
    assert_eq!(
        rs(
            "{{ .dburl | replace \"postgres://\" \"postgresql://\" }}",
            v
        ),
        "postgresql://db:5432/app"
    );
    assert_eq!(
        rs("{{ .password | toString | upper }} was templated", v),
        "P@SS was templated"
    );
    assert_eq!(rs("{{ `{{ .mysecret }}` }}", v), "{{ .mysecret }}");
    assert_eq!(rs("{{ .password | b64enc | b64dec }}", v), "p@ss");
    let templated = "my-application-{{ .user}}: {{ .password | b64enc }}\n{{- if hasPrefix \"oci://\" .uri }}\nenableOCI: true\n{{- else }}\nenableOCI: false\n{{- end }}\n";
    assert_eq!(
        rs(templated, v),
        "my-application-admin: cEBzcw==\nenableOCI: true\n"
    );
    let annotations = "last-synced-for-user/{{ .user }}: {{ now }}";
    assert!(rs(annotations, v).starts_with("last-synced-for-user/admin: 20"));
}

#[test]
fn snippet_literal_htpasswd() {
    let src = "{{- $creds := list }}\n{{- range $user, $pw := . }}\n  {{- $creds = append $creds (printf \"%s\" (htpasswd $user $pw \"bcrypt\")) }}\n{{- end }}\nauth: {{ $creds | join \"\\n\" | quote }}";
    let out = rs(src, &[("alice", b"pw1"), ("bob", b"pw2")]);
    assert!(out.starts_with("\nauth: "), "{out:?}");
    let inner = out
        .strip_prefix("\nauth: \"")
        .and_then(|x| x.strip_suffix('"'))
        .expect("quoted");
    let lines: Vec<&str> = inner.split("\\n").collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("alice:$2a$10$"));
    assert!(bcrypt::verify("pw2", lines[1].trim_start_matches("bob:")).unwrap_or(false));
}

struct Pki {
    root_pem: String,
    int_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
    leaf_key_der: Vec<u8>,
    leaf_der: Vec<u8>,
    int_der: Vec<u8>,
    root_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let root_key = KeyPair::generate().expect("key");
    let mut root_p = CertificateParams::new(Vec::<String>::new()).expect("params");
    root_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_p.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::from_params(&root_p, &root_key);

    let int_key = KeyPair::generate().expect("key");
    let mut int_p = CertificateParams::new(Vec::<String>::new()).expect("params");
    int_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    int_p.use_authority_key_identifier_extension = true;
    let int = int_p.signed_by(&int_key, &root_issuer).expect("int");
    let int_issuer = Issuer::from_params(&int_p, &int_key);

    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_p =
        CertificateParams::new(vec!["a.example.com".to_owned(), "b.example.com".to_owned()])
            .expect("params");
    leaf_p
        .subject_alt_names
        .push(SanType::IpAddress("10.0.0.1".parse().expect("ip")));
    leaf_p.subject_alt_names.push(SanType::Rfc822Name(
        "ops@example.com".try_into().expect("email"),
    ));
    leaf_p.is_ca = IsCa::ExplicitNoCa;
    leaf_p.use_authority_key_identifier_extension = true;
    let leaf = leaf_p.signed_by(&leaf_key, &int_issuer).expect("leaf");
    Pki {
        root_pem: root.pem(),
        int_pem: int.pem(),
        leaf_pem: leaf.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
        leaf_key_der: leaf_key.serialize_der(),
        leaf_der: leaf.der().to_vec(),
        int_der: int.der().to_vec(),
        root_der: root.der().to_vec(),
    }
}

fn pem(typ: &str, der: &[u8]) -> String {
    eso::pem_encode(typ, &[], der)
}

#[test]
fn snippet_filter_pem_and_cert_chain() {
    let p = pki();
    // Bundle out of order, with junk before it and a key in the middle.
    let bundle = format!(
        "junk line\n{}{}{}{}",
        p.int_pem, p.leaf_key_pem, p.root_pem, p.leaf_pem
    );
    let v: &[(&str, &[u8])] = &[("mysecret", bundle.as_bytes())];
    let certs = rs("{{ .mysecret | filterPEM \"CERTIFICATE\" }}", v);
    assert_eq!(
        certs,
        format!(
            "{}{}{}",
            pem("CERTIFICATE", &p.int_der),
            pem("CERTIFICATE", &p.root_der),
            pem("CERTIFICATE", &p.leaf_der)
        )
    );
    assert_eq!(
        rs("{{ .mysecret | filterPEM \"PRIVATE KEY\" }}", v),
        pem("PRIVATE KEY", &p.leaf_key_der)
    );
    assert_eq!(
        rs(
            "{{ .mysecret | filterPEM \"CERTIFICATE\" | filterCertChain \"leaf\" }}",
            v
        ),
        pem("CERTIFICATE", &p.leaf_der)
    );
    assert_eq!(
        rs(
            "{{ .mysecret | filterPEM \"CERTIFICATE\" | filterCertChain \"intermediate\" }}",
            v
        ),
        pem("CERTIFICATE", &p.int_der)
    );
    assert_eq!(
        rs(
            "{{ .mysecret | filterPEM \"CERTIFICATE\" | filterCertChain \"root\" }}",
            v
        ),
        pem("CERTIFICATE", &p.root_der)
    );
    let e = fails(
        "{{ .x | filterPEM \"CERTIFICATE\" }}",
        &[("x", b"only junk")],
    );
    assert!(
        e.to_string().contains("error filtering pem: found junk"),
        "{e}"
    );
    assert_eq!(
        rs("{{ .x | filterPEM \"CERTIFICATE\" }}", &[("x", b"")]),
        ""
    );
}

#[test]
fn snippet_cert_sans() {
    let p = pki();
    let v: &[(&str, &[u8])] = &[("certificate", p.leaf_pem.as_bytes())];
    let base = ".certificate | filterPEM \"CERTIFICATE\" | filterCertChain \"leaf\" | certSANs";
    assert_eq!(
        rs(&format!("{{{{ {base} | join \",\" }}}}"), v),
        "a.example.com,b.example.com,10.0.0.1,ops@example.com"
    );
    assert_eq!(
        rs(&format!("{{{{ index ({base}) 0 }}}}"), v),
        "a.example.com"
    );
    assert_eq!(
        rs(&format!("{{{{ {base} | toJson }}}}"), v),
        "[\"a.example.com\",\"b.example.com\",\"10.0.0.1\",\"ops@example.com\"]"
    );
    let e = fails("{{ .c | certSANs }}", &[("c", b"nope")]);
    assert!(e.to_string().contains("failed to decode PEM block"));
}

fn make_p12(p: &Pki, pass: &str, with_chain: bool) -> Vec<u8> {
    let key = p12_keystore::PrivateKey::from_der(&p.leaf_key_der).expect("key");
    let mut chain = vec![p12_keystore::Certificate::from_der(&p.leaf_der).expect("cert")];
    if with_chain {
        chain.push(p12_keystore::Certificate::from_der(&p.root_der).expect("cert"));
        chain.push(p12_keystore::Certificate::from_der(&p.int_der).expect("cert"));
    }
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry(
        "k",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            vec![1u8, 2, 3],
            key,
            chain,
        )),
    );
    ks.writer(pass).write().expect("p12")
}

#[test]
fn snippet_pkcs12() {
    let p = pki();
    let p12 = make_p12(&p, "", true);
    let v: &[(&str, &[u8])] = &[("mysecret", &p12)];
    assert_eq!(
        rs("{{ .mysecret | pkcs12key }}", v),
        pem("PRIVATE KEY", &p.leaf_key_der)
    );
    // ordered leaf -> intermediate -> root
    assert_eq!(
        rs("{{ .mysecret | pkcs12cert }}", v),
        format!(
            "{}{}{}",
            pem("CERTIFICATE", &p.leaf_der),
            pem("CERTIFICATE", &p.int_der),
            pem("CERTIFICATE", &p.root_der)
        )
    );
    let p12pw = make_p12(&p, "my-password", false);
    let v: &[(&str, &[u8])] = &[("mysecret", &p12pw)];
    assert_eq!(
        rs("{{ .mysecret | pkcs12certPass \"my-password\" }}", v),
        pem("CERTIFICATE", &p.leaf_der)
    );
    assert_eq!(
        rs("{{ .mysecret | pkcs12keyPass \"my-password\" }}", v),
        pem("PRIVATE KEY", &p.leaf_key_der)
    );
    let e = fails("{{ .mysecret | pkcs12cert }}", v);
    assert!(
        e.to_string()
            .contains("unable to decode pkcs12 certificate with password"),
        "{e}"
    );
}

#[test]
fn pem_to_pkcs12_roundtrip() {
    let p = pki();
    let full_chain = format!("{}{}", p.leaf_pem, p.int_pem);
    let v: &[(&str, &[u8])] = &[
        ("crt", p.leaf_pem.as_bytes()),
        ("chain", full_chain.as_bytes()),
        ("key", p.leaf_key_pem.as_bytes()),
        ("ca", p.root_pem.as_bytes()),
    ];
    let b64 = rs("{{ pemToPkcs12Pass .crt .key \"pw\" }}", v);
    let p12 = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("b64");
    let back = rs("{{ .p | pkcs12keyPass \"pw\" }}", &[("p", &p12)]);
    assert_eq!(back, pem("PRIVATE KEY", &p.leaf_key_der));
    let out = rs("{{ fullPemToPkcs12 .chain .key | b64dec | pkcs12cert }}", v);
    assert_eq!(
        out,
        format!(
            "{}{}",
            pem("CERTIFICATE", &p.leaf_der),
            pem("CERTIFICATE", &p.int_der)
        )
    );
    let ts = rs("{{ pemTruststoreToPKCS12 .ca }}", v);
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ts).expect("b64");
    let arch = p12_keystore::Pkcs12Archive::from_pkcs12(&raw, "").expect("truststore");
    assert_eq!(arch.certs.len(), 1);
    assert_eq!(arch.certs[0].cert.as_der(), p.root_der.as_slice());
}

#[test]
fn snippet_jwk() {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let key = rsa::RsaPrivateKey::new(&mut rand_core_rng(), 1024).expect("rsa");
    let b = |n: &rsa::BigUint| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            n.to_bytes_be(),
        )
    };
    let primes = key.primes();
    let priv_jwk = format!(
        r#"{{"kty":"RSA","n":"{}","e":"{}","d":"{}","p":"{}","q":"{}"}}"#,
        b(key.n()),
        b(key.e()),
        b(key.d()),
        b(&primes[0]),
        b(&primes[1])
    );
    let pub_jwk = format!(
        r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#,
        b(key.n()),
        b(key.e())
    );
    let want_priv = pem("PRIVATE KEY", key.to_pkcs8_der().expect("der").as_bytes());
    let want_pub = pem(
        "PUBLIC KEY",
        key.to_public_key()
            .to_public_key_der()
            .expect("der")
            .as_bytes(),
    );
    assert_eq!(
        rs(
            "{{ .myjwk | jwkPrivateKeyPem }}",
            &[("myjwk", priv_jwk.as_bytes())]
        ),
        want_priv
    );
    assert_eq!(
        rs(
            "{{ .myjwk | jwkPublicKeyPem }}",
            &[("myjwk", pub_jwk.as_bytes())]
        ),
        want_pub
    );
    let e = fails(
        "{{ .myjwk | jwkPrivateKeyPem }}",
        &[("myjwk", pub_jwk.as_bytes())],
    );
    assert!(
        e.to_string()
            .contains("unknown key type while marshaling PKCS#8: *rsa.PublicKey")
    );

    // EC P-256 from a generated key (rcgen's PKCS#8 holds d and the public point).
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
    let pk = kp.public_key_raw().to_vec(); // 04 || x || y
    let der = kp.serialize_der();
    // d is the 32-byte OCTET STRING right after `04 20` inside the ECPrivateKey.
    let pos = der.windows(2).position(|w| w == [0x04, 0x20]).expect("d");
    let d = &der[pos + 2..pos + 34];
    let u = |x: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, x);
    let ec_pub = format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
        u(&pk[1..33]),
        u(&pk[33..])
    );
    let ec_priv = format!(
        r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}","d":"{}"}}"#,
        u(&pk[1..33]),
        u(&pk[33..]),
        u(d)
    );
    assert_eq!(
        rs("{{ .k | jwkPublicKeyPem }}", &[("k", ec_pub.as_bytes())]),
        pem(
            "PUBLIC KEY",
            &rcgen::PublicKeyData::subject_public_key_info(&kp)
        )
    );
    let out = rs("{{ .k | jwkPrivateKeyPem }}", &[("k", ec_priv.as_bytes())]);
    assert_eq!(out, pem("PRIVATE KEY", &der));
}

fn rand_core_rng() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}

#[test]
fn snippet_rsa_decrypt() {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rand_core_rng(), 1024).expect("rsa");
    let pem_key = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .expect("pem")
        .to_string();
    let ct = key
        .to_public_key()
        .encrypt(
            &mut rand_core_rng(),
            rsa::Oaep::new::<sha1::Sha1>(),
            b"hunter2",
        )
        .expect("enc");
    let v: &[(&str, &[u8])] = &[
        ("privatekey", pem_key.as_bytes()),
        ("password_encrypted_binary", &ct),
    ];
    assert_eq!(
        rs(
            "{{ rsaDecrypt \"RSA-OAEP\" \"SHA1\" .password_encrypted_binary .privatekey }}",
            v
        ),
        "hunter2"
    );
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ct);
    assert_eq!(
        rs(
            "{{ rsaDecrypt \"RSA-OAEP\" \"SHA1\" (b64dec .c) .privatekey }}",
            &[("c", b64.as_bytes()), ("privatekey", pem_key.as_bytes())]
        ),
        "hunter2"
    );
    let e = fails(
        "{{ rsaDecrypt \"RSA-OAEP\" \"SHA256\" .password_encrypted_binary .privatekey }}",
        v,
    );
    assert!(e.to_string().contains("error decrypting data with RSA"));
    let e = fails("{{ rsaDecrypt \"X\" \"SHA1\" \"a\" \"b\" }}", &[]);
    assert!(
        e.to_string()
            .contains("decryption scheme X is not supported")
    );
}

// ------------------------------------------------------------------ limits

fn is_limit(src: &str) {
    let e = fails(src, &[("x", b"abc")]);
    assert!(matches!(e, TemplateError::Limit { .. }), "{src}: {e:?}");
}

#[test]
fn hostile_templates_are_bounded() {
    is_limit("{{ range until 100000000 }}x{{ end }}");
    is_limit("{{ repeat 1000000000 \"x\" }}");
    is_limit("{{ range $i := until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}");
    is_limit("{{ untilStep 0 1000000000 1 }}");
    is_limit("{{ seq 100000000 }}");
    is_limit("{{ randAlphaNum 100000000 }}");
    is_limit("{{ randBytes 100000000 }}");
    is_limit("{{ indent 100000000 \"a\" }}");
    // Output larger than a Secret.
    is_limit("{{ range until 2000 }}{{ repeat 1000 \"x\" }}{{ end }}");
    // Exponential growth through a variable.
    is_limit(
        "{{ $s := \"xxxxxxxx\" }}{{ range until 40 }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}",
    );
    is_limit(
        "{{ printf \"%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s%65535s\" }}",
    );
    // Deep nesting through a loop.
    is_limit("{{ $l := list }}{{ range until 1000 }}{{ $l = list $l }}{{ end }}{{ $l }}");
    // Too many function calls / time.
    is_limit("{{ range until 1000000 }}{{ $x := add 1 1 }}{{ $y := add 1 1 }}{{ end }}");
    // Oversized source.
    let big = "x".repeat(MAX_SOURCE_BYTES + 1);
    assert!(matches!(check("k", &big), Err(TemplateError::Limit { .. })));
    // Deep syntactic nesting is a parse error, not a stack overflow.
    let deep = format!("{}{}", "{{ if true }}".repeat(500), "{{ end }}".repeat(500));
    assert!(check("k", &deep).is_err());
}

// ------------------------------------------------------------------ secrecy

#[test]
fn errors_never_contain_secret_values() {
    let canary = "CANARY-7f3a9c-SECRET";
    let v: &[(&str, &[u8])] = &[
        ("pw", canary.as_bytes()),
        ("bin", &[0xff, 0xfe, b'C', b'A']),
    ];
    let templates = [
        "{{ .pw | b64dec | pkcs12key }}",
        "{{ .pw | pkcs12cert }}",
        "{{ .pw | filterPEM \"CERTIFICATE\" }}",
        "{{ .pw | certSANs }}",
        "{{ .pw | jwkPublicKeyPem }}",
        "{{ .pw | fromJson | mustToJson }}{{ mustFromJson .pw }}",
        "{{ fail .pw }}",
        "{{ fail (printf \"bad: %s\" .pw) }}",
        "{{ .pw | upper | fail }}",
        "{{ rsaDecrypt \"RSA-OAEP\" \"SHA1\" .pw .pw }}",
        "{{ rsaDecrypt .pw \"SHA1\" .pw .pw }}",
        "{{ .pw.field }}",
        "{{ index .pw 100 }}",
        "{{ .pw | int | upper }}",
        "{{ add .pw | upper }}",
        "{{ .pw | regexMatch \"[\" }}",
        "{{ regexMatch .pw \"x\" }}{{ regexFind (printf \"[%s\" .pw) \"x\" }}",
        "{{ template .pw }}",
        "{{ slice .pw 1 2 }}",
        "{{ .bin | fail }}",
        "{{ pemToPkcs12 .pw .pw }}",
        "{{ fullPemToPkcs12 .pw .pw }}",
        "{{ pemTruststoreToPKCS12 .pw }}",
        "{{ filterCertChain \"leaf\" .pw }}",
        "{{ hasKey .pw \"x\" }}",
        "{{ eq .pw 1 }}",
        "{{ lt .pw 1 }}",
    ];
    for src in templates {
        match render("spec.target.template.data.password", src, &vals(v)) {
            Ok(_) => {}
            Err(e) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("CANARY"), "{src} leaked: {shown}");
                assert!(!shown.contains("7f3a9c"), "{src} leaked: {shown}");
                assert!(!shown.contains('\u{10FFFF}') && !shown.contains('\u{10FFFE}'));
            }
        }
    }
    // A literal fail message is kept.
    let e = fails("{{ fail \"password missing\" }}", &[]);
    assert!(e.to_string().contains("password missing"));
    // render_json scrubs too.
    let e = render_json(
        "t",
        "{{ fail (upper .value) }}{{ .value.x }}",
        &serde_json::json!({"value": canary}),
    );
    let shown = format!("{:?}", e);
    assert!(!shown.contains("CANARY"), "{shown}");
}
