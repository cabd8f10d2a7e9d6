use super::*;
use crate::carriers::body_edits;
use crate::soap::splice;
use bytes::Bytes;

/// Property tests: generated and mutated envelopes.
mod props;

fn scan(body: &str) -> Result<Envelope, ScanError> {
    Scanner::new()
        .feed(body.as_bytes(), true)
        .map(|found| found.expect("at_eof gives an answer"))
}

/// The body with the ims edits applied.
fn spliced(body: &str) -> String {
    let envelope = scan(body).unwrap();
    let bytes = Bytes::copy_from_slice(body.as_bytes());
    let edits = body_edits(&envelope);
    let mut out = splice(&bytes.slice(..envelope.end), &edits).concat();
    out.extend_from_slice(&bytes[envelope.end..]);
    String::from_utf8(out).unwrap()
}

fn credential(body: &str) -> String {
    scan(body)
        .unwrap()
        .credential()
        .map(|p| p.value.expose().to_owned())
        .unwrap_or_default()
}

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";

fn envelope(inner: &str) -> String {
    format!(
        r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP11}"><SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

#[test]
fn seed_002_before_becomes_seed_002_after() {
    let before = crate::demo::SEED_002_BEFORE;
    let after = crate::demo::SEED_002_AFTER;
    assert_eq!(credential(before), "SESSION_TOKEN");
    assert_eq!(spliced(before), after);
    let envelope = scan(before).unwrap();
    assert_eq!(envelope.version, SoapVersion::V11);
    assert_eq!(envelope.method.name, "PushEvent");
    assert_eq!(
        envelope.method.namespace.as_deref(),
        Some("urn:nms:rtEvent")
    );
    // The prefix ends right after the token element: the domEvent is never parsed.
    assert!(before[..envelope.end].ends_with("</urn:sessiontoken>"));
}

#[test]
fn first_parameter_whatever_its_name_or_prefix() {
    for param in [
        "<sessiontoken>mc/pw</sessiontoken>",
        "<__sessiontoken>mc/pw</__sessiontoken>",
        "<urn:sessiontoken>mc/pw</urn:sessiontoken>",
        r#"<sessiontoken xsi:type="xsd:string" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">mc/pw</sessiontoken>"#,
        "<strToken>mc/pw</strToken>",
        "<sessiontoken>\n   mc/pw \t\n</sessiontoken>",
        "<sessiontoken><![CDATA[mc/pw]]></sessiontoken>",
        "<sessiontoken>mc<!-- note -->/pw</sessiontoken>",
        "<sessiontoken>&#109;c&#x2F;pw</sessiontoken>",
    ] {
        let body = envelope(&format!(
            r#"<urn:Write xmlns:urn="urn:xtk:persist|xtk:session">{param}<urn:domDoc><x/></urn:domDoc></urn:Write>"#
        ));
        assert_eq!(credential(&body), "mc/pw", "{param}");
        let out = spliced(&body);
        let start = body.find(param).unwrap();
        let open_end = start + param.find('>').unwrap() + 1;
        let close_start = start + param.rfind("</").unwrap();
        let expected = format!("{}{}", &body[..open_end], &body[close_start..]);
        assert_eq!(out, expected, "only the content goes: {param}");
    }
}

#[test]
fn entities_in_passwords_are_unescaped() {
    let body = envelope("<m:X xmlns:m='urn:a:b'><t>mc/p&amp;w&lt;&gt;&quot;&apos;</t></m:X>");
    assert_eq!(credential(&body), "mc/p&w<>\"'");
}

#[test]
fn soap12_and_default_namespaces() {
    let body = r#"<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><Logon xmlns="urn:xtk:session"><sessiontoken/><strLogin>mc</strLogin></Logon></env:Body></env:Envelope>"#;
    let envelope = scan(body).unwrap();
    assert_eq!(envelope.version, SoapVersion::V12);
    assert_eq!(envelope.method.name, "Logon");
    assert_eq!(
        envelope.method.namespace.as_deref(),
        Some("urn:xtk:session")
    );
    let param = envelope.credential().unwrap();
    assert!(param.value.is_empty());
    assert!(param.content.is_empty());
}

#[test]
fn header_copies_are_found_and_emptied() {
    let body = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Header><Cookie>a=1; __sessiontoken=mc/pw</Cookie><X-Security-Token>sec-123</X-Security-Token><Other>keep</Other></s:Header><s:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><m:sessiontoken>mc/pw</m:sessiontoken><m:domEvent/></m:PushEvent></s:Body></s:Envelope>"#
    );
    let envelope = scan(&body).unwrap();
    let kinds: Vec<_> = envelope.carriers.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [CarrierKind::Cookie, CarrierKind::SecurityToken]);
    assert_eq!(envelope.carriers[1].param.value.expose(), "sec-123");
    assert_eq!(
        spliced(&body),
        body.replace("a=1; __sessiontoken=mc/pw", "")
            .replace("sec-123", "")
            .replace(">mc/pw<", "><")
    );
    // A cookie element without the session cookie is left as it is.
    let plain = body.replace("a=1; __sessiontoken=mc/pw", "a=1");
    assert!(spliced(&plain).contains("<Cookie>a=1</Cookie>"));
}

#[test]
fn method_without_parameters() {
    let found = scan(&envelope("<m:Logoff xmlns:m='urn:xtk:session'/>")).unwrap();
    assert_eq!(found.method.name, "Logoff");
    assert!(found.credential().is_none());
    let found = scan(&envelope(
        "<m:Logoff xmlns:m='urn:xtk:session'>  </m:Logoff>",
    ))
    .unwrap();
    assert!(found.credential().is_none());
}

#[test]
fn refusals() {
    let cases: &[(&str, ScanError)] = &[
        // Not a document cut short: no document at all.
        (
            "not xml at all",
            ScanError::NotXml("text before the root element"),
        ),
        (
            "hello<s:Envelope/>",
            ScanError::NotXml("text before the root element"),
        ),
        ("  \n<a/>", ScanError::NotSoap),
        ("<a><b></a>", ScanError::NotSoap),
        (
            r#"<!DOCTYPE x [<!ENTITY e "boom">]><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>"#,
            ScanError::Doctype,
        ),
        (
            r#"<Envelope><Body><m/></Body></Envelope>"#,
            ScanError::NotSoap,
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"></s:Envelope>"#),
            ScanError::NoBody,
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"/>"#),
            ScanError::NoBody,
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body/></s:Envelope>"#),
            ScanError::NoMethod,
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body> </s:Body></s:Envelope>"#),
            ScanError::NoMethod,
        ),
        (
            &envelope("<m:X xmlns:m='urn:a'><t>mc/pw</u></m:X>"),
            ScanError::NotXml("end tag does not match its start tag"),
        ),
        (
            &envelope("<m:X xmlns:m='urn:a'><t>mc/&bogus;</t></m:X>"),
            ScanError::NotXml("unknown entity reference"),
        ),
        (
            &envelope("<m:X xmlns:m='urn:a'><t>mc/pw"),
            ScanError::NotXml("end tag does not match its start tag"),
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><m:X xmlns:m='urn:a'><t>mc/pw"#),
            ScanError::Truncated,
        ),
        (
            &format!(r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><m:X xmlns:m='urn:a'><t>mc/pw</t"#),
            ScanError::NotXml("unclosed markup"),
        ),
        (
            &envelope("<m:X xmlns:m='urn:a' a='1' a='2'><t>x/y</t></m:X>"),
            ScanError::NotXml("malformed attribute"),
        ),
        // A Body in another namespace is not the SOAP Body, but a reader that ignores
        // namespaces would take it for one.
        (
            &format!(
                r#"<s:Envelope xmlns:s="{SOAP11}"><Body><m:X xmlns:m="urn:a"><t>a/b</t></m:X></Body></s:Envelope>"#
            ),
            ScanError::Ambiguous("a Body outside the SOAP envelope namespace"),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(scan(body).unwrap_err(), *expected, "{body}");
    }
}

#[test]
fn utf16_and_invalid_utf8_are_refused() {
    // UTF-16 with a byte-order mark or without, either order.
    for body in [
        &b"\xFF\xFE<\x00"[..],
        b"\xFE\xFF\x00<",
        b"<\x00?\x00",
        b"\x00<\x00?",
    ] {
        assert_eq!(
            Scanner::new().feed(body, true).unwrap_err(),
            ScanError::Encoding
        );
    }
    let mut body = envelope("<m:X xmlns:m='urn:a'><t>mc/p\u{e9}</t></m:X>").into_bytes();
    let at = body
        .windows(2)
        .position(|w| w == "\u{e9}".as_bytes())
        .unwrap();
    body[at] = 0xE9; // Latin-1 é: not UTF-8
    body.remove(at + 1);
    assert_eq!(
        Scanner::new().feed(&body, true).unwrap_err(),
        ScanError::NotUtf8
    );
}

/// `body` (a UTF-8 string) in `charset`, whose characters it has.
fn encoded(body: &str, charset: Charset) -> Vec<u8> {
    body.chars()
        .map(|c| {
            (0..=255u8)
                .find(|&b| charset.decode(&[b]).unwrap().starts_with(c))
                .unwrap_or_else(|| panic!("{c} not in {charset:?}"))
        })
        .collect()
}

#[test]
fn single_byte_charsets_are_read_and_their_credentials_decoded() {
    let password = "pässwörd€";
    for (label, charset, password) in [
        ("ISO-8859-1", Charset::Latin1, "pässwörd"),
        ("ISO-8859-15", Charset::Latin9, password),
        ("windows-1252", Charset::Windows1252, password),
    ] {
        // Declared, with high bytes before the credential too (in a comment, a Header).
        let text = format!(
            "<?xml version='1.0' encoding='{label}'?><s:Envelope xmlns:s='{SOAP11}'><s:Header><h>é</h></s:Header><s:Body><!-- à --><m:X xmlns:m='urn:a'><t>mc/{password}</t><u>ü</u></m:X></s:Body></s:Envelope>"
        );
        let body = encoded(&text, charset);
        let cut = text.find("mc/").unwrap();
        for cuts in [vec![], vec![cut + 2], (1..body.len()).collect::<Vec<_>>()] {
            let envelope = scan_in_pieces(&body, &cuts).unwrap();
            let credential = envelope.credential().unwrap();
            assert_eq!(
                credential.value.expose(),
                format!("mc/{password}"),
                "{label}"
            );
            // Where it lies in the body's own bytes.
            let start = body.len() - encoded(&text[cut..], charset).len();
            assert_eq!(credential.content.start, start, "{label}");
        }
        // Undeclared, with the charset of the Content-Type.
        let undeclared = encoded(&text[text.find("?>").unwrap() + 2..], charset);
        let envelope = Scanner::with_charset(Some(charset))
            .feed(&undeclared, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            envelope.credential().unwrap().value.expose(),
            format!("mc/{password}")
        );
        // A Content-Type that says otherwise.
        let other = if charset == Charset::Latin1 {
            Charset::Utf8
        } else {
            Charset::Latin1
        };
        assert_eq!(
            Scanner::with_charset(Some(other))
                .feed(&body, true)
                .unwrap_err(),
            ScanError::EncodingMismatch
        );
    }
}

#[test]
fn a_declaration_and_a_content_type_that_disagree() {
    // Read by the declaration, as Campaign reads it: an ASCII credential is the same in both,
    // a non-ASCII one is not (and in pieces, whatever the cut).
    let mismatch = ScanError::EncodingMismatch;
    let logon = "<m:Logon xmlns:m='urn:xtk:session'><t/><l>mc</l><p>PASSWORD</p></m:Logon>";
    for (declared, label, charset) in [
        ("ISO-8859-1", "ISO-8859-1", Charset::Latin1),
        ("windows-1252", "windows-1252", Charset::Windows1252),
        ("ISO-8859-15", "ISO-8859-15", Charset::Latin9),
    ] {
        for content_type in [
            Charset::Utf8,
            Charset::Ascii,
            Charset::Latin1,
            Charset::Latin9,
        ]
        .into_iter()
        .filter(|&c| c != charset)
        {
            let body = |inner: &str| {
                let text = format!(
                    "<?xml version='1.0' encoding='{label}'?><s:Envelope xmlns:s='{SOAP11}'><s:Header><h>é</h>HEADER</s:Header><s:Body><!-- à -->{inner}</s:Body></s:Envelope>"
                );
                move |header: &str| encoded(&text.replace("HEADER", header), charset)
            };
            // Whole, and in pieces of 7 bytes.
            let read = |bytes: &[u8]| {
                let scanner = || Scanner::with_charset(Some(content_type));
                let whole = scanner().feed(bytes, true).map(|found| found.unwrap());
                let cuts: Vec<usize> = (1..bytes.len()).step_by(7).collect();
                let pieces = scan_in_pieces_as(scanner(), bytes, &cuts);
                assert_eq!(
                    whole.as_ref().map(|e| e.end).map_err(Clone::clone),
                    pieces.map(|e| e.end),
                    "{declared} / {content_type:?}"
                );
                whole
            };
            let ascii = body("<m:X xmlns:m='urn:a'><t>mc/p&amp;w</t><u>ü</u></m:X>");
            let found = read(&ascii("<Cookie>__sessiontoken=mc/p&amp;w</Cookie>")).unwrap();
            assert_eq!(found.credential().unwrap().value.expose(), "mc/p&w");
            assert_eq!(found.carriers.len(), 1);
            let accented = body("<m:X xmlns:m='urn:a'><t>mc/pässwörd</t></m:X>");
            assert_eq!(read(&accented("")).unwrap_err(), mismatch, "{declared}");
            // In a Header copy, or in Logon's password.
            assert_eq!(
                read(&ascii("<X-Session-Token>mc/é</X-Session-Token>")).unwrap_err(),
                mismatch
            );
            let password = body(&logon.replace("PASSWORD", "pässwörd"));
            assert_eq!(read(&password("")).unwrap_err(), mismatch);
            let password = body(&logon.replace("PASSWORD", "password"));
            assert_eq!(read(&password("")).unwrap().params.len(), 3);
        }
    }
    // UTF-8 and US-ASCII disagree too when a credential holds what US-ASCII cannot.
    let text = |label: &str, password: &str| {
        format!(
            "<?xml version='1.0' encoding='{label}'?><s:Envelope xmlns:s='{SOAP11}'><s:Body><m:X xmlns:m='urn:a'><t>mc/{password}</t></m:X></s:Body></s:Envelope>"
        )
    };
    for (label, content_type) in [("US-ASCII", Charset::Utf8), ("UTF-8", Charset::Ascii)] {
        let read =
            |body: String| Scanner::with_charset(Some(content_type)).feed(body.as_bytes(), true);
        assert_eq!(read(text(label, "pässwörd")).unwrap_err(), mismatch);
        let found = read(text(label, "password")).unwrap().unwrap();
        assert_eq!(found.credential().unwrap().value.expose(), "mc/password");
    }
    // Agreeing, a UTF-8 credential is read as it always was.
    let found = Scanner::with_charset(Some(Charset::Utf8))
        .feed(text("UTF-8", "pässwörd").as_bytes(), true)
        .unwrap()
        .unwrap();
    assert_eq!(found.credential().unwrap().value.expose(), "mc/pässwörd");
    // Any other disagreement: an encoding outside the five, declared.
    assert_eq!(
        Scanner::with_charset(Some(Charset::Utf8))
            .feed(text("UTF-16", "password").as_bytes(), true)
            .unwrap_err(),
        ScanError::Encoding
    );
}

/// Found by the fuzzer: quick-xml strips a BOM at the start of its input without counting it,
/// so a second one shifted every position by three bytes.
#[test]
fn any_number_of_byte_order_marks_keeps_positions_exact() {
    for marks in 1..4 {
        let body = format!(
            "{}{}",
            "\u{feff}".repeat(marks),
            crate::demo::SEED_002_BEFORE
        );
        assert_eq!(credential(&body), "SESSION_TOKEN", "{marks} marks");
        assert_eq!(
            spliced(&body),
            body.replace("SESSION_TOKEN", ""),
            "{marks} marks"
        );
    }
    // The fuzzer's own input: whole or in chunks, the same verdict.
    let crash = include_bytes!("../../../fuzz/regressions/prefix-double-bom");
    let (&step, body) = crash.split_first().unwrap();
    let whole = Scanner::new().feed(body, true).map(|e| e.map(|e| e.end));
    let cuts: Vec<usize> = (1..body.len())
        .step_by(usize::from(step % 64) + 1)
        .collect();
    let chunked = scan_in_pieces(body, &cuts).map(|e| Some(e.end));
    assert_eq!(whole, chunked);
}

#[test]
fn text_before_the_root_gets_one_verdict_whatever_the_chunks() {
    // The fuzzer's find: `K` then a byte that is not UTF-8. Whole, the text is not UTF-8; in
    // one-byte chunks, `K` alone looked like text before the root.
    let crash = include_bytes!("../../../fuzz/regressions/prefix-text-before-root-then-not-utf8");
    let body = &crash[1..];
    assert_eq!(
        Scanner::new().feed(body, true).unwrap_err(),
        ScanError::NotUtf8
    );
    assert_eq!(scan_in_pieces(body, &[1]).unwrap_err(), ScanError::NotUtf8);
    // Another find: white space and a byte order mark before the root, in one-byte chunks.
    let crash = include_bytes!("../../../fuzz/regressions/prefix-bom-in-prolog-text");
    let (&step, body) = crash.split_first().unwrap();
    let cuts: Vec<usize> = (1..body.len())
        .step_by(usize::from(step % 64) + 1)
        .collect();
    assert_eq!(
        Scanner::new().feed(body, true).map(|e| e.map(|e| e.end)),
        scan_in_pieces(body, &cuts).map(|e| Some(e.end))
    );
    // A UTF-16 byte-order mark, byte by byte: the first byte alone is not UTF-8, but the
    // verdict waits for enough bytes to tell the encoding.
    let crash = include_bytes!("../../../fuzz/regressions/prefix-utf16-bom-in-pieces");
    let body = &crash[1..];
    assert_eq!(
        Scanner::new().feed(body, true).unwrap_err(),
        ScanError::Encoding
    );
    assert_eq!(scan_in_pieces(body, &[1]).unwrap_err(), ScanError::Encoding);
    // A third: an unfinished DOCTYPE, then a byte that is not UTF-8. Refused as a DOCTYPE
    // as soon as it starts, whole or in pieces.
    let crash = include_bytes!("../../../fuzz/regressions/prefix-doctype-then-not-utf8");
    let body = &crash[1..];
    let cuts: Vec<usize> = (1..body.len()).collect();
    assert_eq!(
        Scanner::new().feed(body, true).unwrap_err(),
        ScanError::Doctype
    );
    assert_eq!(scan_in_pieces(body, &cuts).unwrap_err(), ScanError::Doctype);
    // Text that is whole is refused as such, at once.
    let mut scanner = Scanner::new();
    assert_eq!(
        scanner.feed(b"hello <", false).unwrap_err(),
        ScanError::NotXml("text before the root element")
    );
}

#[test]
fn a_utf8_bom_is_skipped() {
    let body = format!("\u{feff}{}", crate::demo::SEED_002_BEFORE);
    assert_eq!(credential(&body), "SESSION_TOKEN");
    let envelope = scan(&body).unwrap();
    assert!(body[..envelope.end].ends_with("</urn:sessiontoken>"));
}

/// Feeds a body in pieces, as chunks arrive: the same result whatever the boundaries.
fn scan_in_pieces(body: &[u8], cuts: &[usize]) -> Result<Envelope, ScanError> {
    scan_in_pieces_as(Scanner::new(), body, cuts)
}

/// [`scan_in_pieces`] with `scanner`.
fn scan_in_pieces_as(
    mut scanner: Scanner,
    body: &[u8],
    cuts: &[usize],
) -> Result<Envelope, ScanError> {
    for &cut in cuts {
        if let Some(envelope) = scanner.feed(&body[..cut], false)? {
            return Ok(envelope);
        }
    }
    scanner.feed(body, true).map(|e| e.expect("complete"))
}

#[test]
fn token_split_at_every_offset() {
    let body = format!(
        r#"<?xml version="1.0"?><s:Envelope xmlns:s="{SOAP11}"><s:Header><Cookie>__sessiontoken=mc/pw&amp;x</Cookie></s:Header><s:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><m:sessiontoken xsi:type="xsd:string">mc/p&#233;w</m:sessiontoken><m:domEvent/></m:PushEvent></s:Body></s:Envelope>"#
    );
    let whole = scan(&body).unwrap();
    assert_eq!(whole.credential().unwrap().value.expose(), "mc/p\u{e9}w");
    for cut in 0..=body.len() {
        let pieces = scan_in_pieces(body.as_bytes(), &[cut]).unwrap();
        assert_eq!(pieces.end, whole.end, "cut at {cut}");
        assert_eq!(
            pieces.credential().unwrap().value.expose(),
            "mc/p\u{e9}w",
            "cut at {cut}"
        );
        assert_eq!(
            pieces.carriers[0].param.value.expose(),
            "__sessiontoken=mc/pw&x"
        );
    }
    // Every byte its own chunk, and a multi-byte character split in two.
    let cuts: Vec<usize> = (1..body.len()).collect();
    assert_eq!(
        scan_in_pieces(body.as_bytes(), &cuts).unwrap().end,
        whole.end
    );
    let accented = envelope("<m:X xmlns:m='urn:a'><t>mc/\u{e9}\u{e9}</t></m:X>");
    for cut in 0..=accented.len() {
        let pieces = scan_in_pieces(accented.as_bytes(), &[cut]).unwrap();
        assert_eq!(
            pieces.credential().unwrap().value.expose(),
            "mc/\u{e9}\u{e9}"
        );
    }
}

#[test]
fn errors_never_quote_the_body() {
    for body in [
        envelope("<m:X xmlns:m='urn:a'><t>mc/s3cr3t&bad</t></m:X>"),
        envelope("<m:X xmlns:m='urn:a'><t>mc/s3cr3t</t2></m:X>"),
        envelope("<m:X xmlns:m='urn:a'><t s3cr3t>mc/x</t></m:X>"),
    ] {
        let error = scan(&body).unwrap_err();
        assert!(
            !format!("{error} {error:?}").contains("s3cr3t"),
            "{error:?}"
        );
    }
}

#[test]
fn a_first_parameter_holding_elements_is_ambiguous() {
    // Campaign reads the first parameter as the credential: with markup in it, readers could
    // take the text before, after, or all of it (one credential per request).
    let ambiguous = ScanError::Ambiguous("markup inside the first parameter");
    let body =
        envelope("<m:PushEvent xmlns:m='urn:a'><m:domEvent><rtEvent/></m:domEvent></m:PushEvent>");
    assert_eq!(scan(&body).unwrap_err(), ambiguous);
    let body = envelope("<m:X xmlns:m='urn:a'><t>oldop/pw<b/></t></m:X>");
    assert_eq!(scan(&body).unwrap_err(), ambiguous);
    // A later parameter of Logon holding elements ends the parameters, as before.
    let body = envelope(
        "<m:Logon xmlns:m='urn:xtk:session'><t/><login>mc</login><password><x/></password></m:Logon>",
    );
    let found = scan(&body).unwrap();
    assert_eq!(found.params.len(), 2);
}

#[test]
fn a_header_copy_holding_markup_is_ambiguous() {
    // A reader could take the text before the markup, after it, all of it or none: the copy
    // is refused, whatever the first parameter says, as markup in the first parameter is.
    let ambiguous = ScanError::Ambiguous("markup inside a SOAP Header copy of the credential");
    for carrier in ["Cookie", "X-Session-Token", "X-Security-Token", "h:Cookie"] {
        for (content, refused) in [
            ("<x/>__sessiontoken=mc/pw", true),
            ("__sessiontoken=mc/pw<x>y</x>", true),
            ("<c>__sessiontoken=mc/pw</c>", true),
            ("<!--x-->__sessiontoken=mc/pw", true),
            ("__sessiontoken=mc/<!-- -->pw", true),
            ("<![CDATA[__sessiontoken=mc/pw]]>", true),
            ("__sessiontoken=<![CDATA[mc/pw]]>", true),
            ("<?pi x?>__sessiontoken=mc/pw", true),
            // Text, with references: a copy as clients write it.
            ("__sessiontoken=mc/pw", false),
            ("__sessiontoken&#61;mc&#x2F;pw", false),
            ("a=1&amp;b; __sessiontoken=mc/pw", false),
            ("", false),
        ] {
            let body = format!(
                r#"<s:Envelope xmlns:s="{SOAP11}" xmlns:h="urn:h"><s:Header><Other><!--fine--><x/></Other><{carrier}>{content}</{carrier}></s:Header><s:Body><m:X xmlns:m="urn:a"><t>mc/pw</t></m:X></s:Body></s:Envelope>"#
            );
            let found = scan(&body);
            if refused {
                assert_eq!(found.unwrap_err(), ambiguous, "{body}");
                // In pieces as well as whole.
                let cuts: Vec<usize> = (1..body.len()).collect();
                assert_eq!(
                    scan_in_pieces(body.as_bytes(), &cuts).unwrap_err(),
                    ambiguous
                );
            } else {
                assert_eq!(found.unwrap().carriers.len(), 1, "{body}");
            }
        }
    }
    // Markup deeper in another Header block, or an element of that name deeper down, is no
    // copy of the credential.
    let body = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Header><Block><Cookie><x/></Cookie></Block></s:Header><s:Body><m:X xmlns:m="urn:a"><t>mc/pw</t></m:X></s:Body></s:Envelope>"#
    );
    assert!(scan(&body).unwrap().carriers.is_empty());
}

#[test]
fn nothing_after_the_token_is_parsed() {
    // What follows the first parameter is streamed, not read: even broken XML there passes.
    let body = envelope("<m:X xmlns:m='urn:a'><t>x/y</t><u a=b/></m:X>");
    let found = scan(&body).unwrap();
    assert!(body[..found.end].ends_with("<t>x/y</t>"));
}

#[test]
fn declared_encodings_not_read_as_ascii_are_refused() {
    // Those whose bytes are not ASCII's, and the other 8-bit ones, whose high bytes would
    // decode to other characters.
    for encoding in [
        "UTF-16",
        "utf-16le",
        "UTF-32",
        "UTF-7",
        "IBM037",
        "ibm-1047",
        "CP500",
        "EBCDIC-US",
        "IBM437",
        "cp850",
        "ISO-8859-2",
    ] {
        let body = crate::demo::SEED_002_BEFORE.replacen(
            "encoding=\"utf-8\"",
            &format!("encoding=\"{encoding}\""),
            1,
        );
        assert!(body.contains(encoding), "{body}");
        assert_eq!(scan(&body).unwrap_err(), ScanError::Encoding, "{encoding}");
    }
    // UTF-8, ASCII and the three 8-bit encodings of Western Europe.
    for encoding in [
        "utf-8",
        "US-ASCII",
        "ISO-8859-1",
        "windows-1252",
        "ISO-8859-15",
    ] {
        let body = crate::demo::SEED_002_BEFORE.replacen(
            "encoding=\"utf-8\"",
            &format!("encoding=\"{encoding}\""),
            1,
        );
        assert_eq!(credential(&body), "SESSION_TOKEN", "{encoding}");
    }
}

/// CPU time this thread has used, in clock ticks (user + system, `/proc/thread-self/stat`).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU ticks to scan `body` fed a byte at a time, `times` over.
fn cpu_of_one_byte_chunks(body: &[u8], times: usize) -> u64 {
    let cuts: Vec<usize> = (1..body.len()).collect();
    let before = thread_cpu_ticks();
    for _ in 0..times {
        let envelope = scan_in_pieces(body, &cuts).unwrap();
        assert_eq!(envelope.credential().unwrap().value.expose(), "mc/pw");
    }
    thread_cpu_ticks() - before
}

/// An envelope whose SOAP Header holds `filler`, padded to about 64 KiB.
fn prefix_of_64k(filler: impl Fn(usize) -> String) -> Vec<u8> {
    let pad = 64 * 1024 - 300;
    format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Header>{}</s:Header><s:Body><m:X xmlns:m="urn:a"><t>mc/pw</t></m:X></s:Body></s:Envelope>"#,
        filler(pad)
    )
    .into_bytes()
}

#[test]
fn an_unfinished_construct_costs_each_byte_once_whatever_the_chunks() {
    // Constructs that stay unfinished for 64 KiB, full of `>`: before, each was parsed again
    // from its start at every chunk (a 64 KiB prefix in 1-byte chunks took 17 s of CPU).
    let hostile = [
        prefix_of_64k(|n| format!("<!--{}-->", ">".repeat(n))),
        prefix_of_64k(|n| format!("<?pi {}?>", ">".repeat(n))),
        prefix_of_64k(|n| format!("<![CDATA[{}]]>", ">".repeat(n))),
        prefix_of_64k(|n| format!("<h a=\"{}\"/>", ">".repeat(n))),
    ];
    // The same size of ordinary markup, in the same chunks: the cost to compare with.
    let ordinary = prefix_of_64k(|n| "<h a='1'/>".repeat(n / 10));
    let baseline = cpu_of_one_byte_chunks(&ordinary, 2);
    for body in &hostile {
        let cost = cpu_of_one_byte_chunks(body, 2);
        // Linear, as the ordinary markup is; quadratic would be hundreds of times more.
        assert!(
            cost <= 3 * baseline + 5,
            "{cost} ticks against {baseline} for ordinary markup: {}",
            String::from_utf8_lossy(&body[80..120])
        );
    }
}
