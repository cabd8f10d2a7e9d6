//! Subjects and subjectAltNames of certificates made here with rcgen, against configured ones.

use rcgen::DnType::{CommonName, CountryName, CustomDnType, OrganizationName};
use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{DnType, DnValue, SanType};

use super::*;

/// A self-signed DER certificate whose subject is `subject` (one RDN each, in that order, as
/// UTF8String) and whose subjectAltNames are `sans`.
pub(crate) fn certificate_for_tests(subject: &[(DnType, &str)], sans: Vec<SanType>) -> Vec<u8> {
    let subject: Vec<_> = subject
        .iter()
        .map(|(kind, value)| (kind.clone(), DnValue::Utf8String((*value).to_owned())))
        .collect();
    certificate_with(&subject, sans)
}

/// [`certificate_for_tests`], with values of any string type.
fn certificate_with(subject: &[(DnType, DnValue)], sans: Vec<SanType>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (kind, value) in subject {
        params.distinguished_name.push(kind.clone(), value.clone());
    }
    params.subject_alt_names = sans;
    params.self_signed(&key).unwrap().der().to_vec()
}

fn identity(subject: &[(DnType, &str)]) -> CertIdentity {
    CertIdentity::from_der(&certificate_for_tests(subject, Vec::new())).unwrap()
}

fn matches(configured: &str, cert: &CertIdentity) -> bool {
    SubjectName::parse(configured)
        .unwrap_or_else(|e| panic!("{configured}: {e}"))
        .matches(cert)
}

#[test]
fn object_identifiers_are_encoded_as_der_writes_them() {
    let encoded = |dotted: &str| Oid::parse(dotted).map(|oid| oid.0.to_vec());
    assert_eq!(encoded("2.5.4.3"), Some(vec![0x55, 0x04, 0x03]));
    assert_eq!(
        encoded("1.2.840.113549.1.9.1"),
        Some(vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01])
    );
    assert_eq!(
        encoded("0.9.2342.19200300.100.1.25"),
        Some(vec![
            0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19
        ])
    );
    // A first octet of 120 and more: arc 2 with a second arc of 40 and more, in one octet or
    // several (X.690 §8.19.4).
    assert_eq!(encoded("2.40.1"), Some(vec![0x78, 0x01]));
    assert_eq!(encoded("2.47.1"), Some(vec![0x7f, 0x01]));
    assert_eq!(encoded("2.48.1"), Some(vec![0x81, 0x00, 0x01]));
    assert_eq!(encoded("2.999.3"), Some(vec![0x88, 0x37, 0x03]));
    assert_eq!(encoded("1.3.6.1.4.1.0"), Some(vec![0x2b, 6, 1, 4, 1, 0]));
    // A UUID arc (2.25, 128 bits) and the largest of them.
    let uuid = u128::MAX.to_string();
    assert_eq!(
        encoded(&format!("2.25.{uuid}")).map(|bytes| bytes.len()),
        Some(1 + 19)
    );
    for malformed in [
        "", "2", "2.", ".2.5", "2..5", "2.5.", "3.1", "1.40", "0.40", "02.5", "2.05", "2.5.4.x",
        "2.5.-4", "2.5. 4",
    ] {
        assert_eq!(Oid::parse(malformed), None, "{malformed}");
    }
    let too_large = format!("2.25.{}0", u128::MAX);
    assert_eq!(Oid::parse(&too_large), None);
}

#[test]
fn named_types_and_numeric_oids_name_the_same_attributes() {
    let cert = identity(&[
        (CommonName, "crm-pusher"),
        (OrganizationName, "Example, Inc."),
        (CountryName, "FR"),
    ]);
    for configured in [
        "CN=crm-pusher,O=Example\\, Inc.,C=FR",
        "2.5.4.3=crm-pusher,2.5.4.10=Example\\, Inc.,2.5.4.6=FR",
        "OID.2.5.4.3=crm-pusher,oid.2.5.4.10=Example\\2C Inc.,C=FR",
        "cn=crm-pusher, o=Example\\, Inc., c=FR",
        "C = FR, O = Example\\, Inc., CN = crm-pusher",
        "/C=FR/O=Example, Inc./CN=crm-pusher",
        "O=Example\\, Inc.+CN=crm-pusher+C=FR",
        "CN=#0C0A63726D2D707573686572,O=Example\\, Inc.,C=FR",
        "CN=#130A63726D2D707573686572,O=Example\\, Inc.,C=FR",
    ] {
        assert!(matches(configured, &cert), "{configured}");
    }
    for other in [
        "CN=crm-pusher",
        "CN=crm-pusher,O=Example\\, Inc.",
        "CN=crm-pusher,O=Example\\, Inc.,C=FR,C=FR",
        "CN=intruder,O=Example\\, Inc.,C=FR",
        "CN=crm-pusher,O=Example\\, Inc.,C=fr",
        "CN=Crm-pusher,O=Example\\, Inc.,C=FR",
        "2.5.4.4=crm-pusher,O=Example\\, Inc.,C=FR",
        "CN=crm-pusher,O=Example,C=FR",
    ] {
        assert!(!matches(other, &cert), "{other}");
    }
}

#[test]
fn every_named_type_is_its_oid() {
    use rcgen::DnType::{LocalityName, OrganizationalUnitName, StateOrProvinceName};
    let dotted = |name: &str| {
        NAMED_TYPES
            .iter()
            .find(|(known, _)| *known == name)
            .unwrap()
            .1
    };
    let cert = identity(&[
        (CommonName, "a"),
        (OrganizationName, "b"),
        (OrganizationalUnitName, "c"),
        (CountryName, "FR"),
        (LocalityName, "d"),
        (StateOrProvinceName, "e"),
        (
            CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 25]),
            "example",
        ),
        (
            CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1]),
            "uid-7",
        ),
        (
            CustomDnType(vec![1, 2, 840, 113_549, 1, 9, 1]),
            "crm@example.com",
        ),
    ]);
    let by_name = "CN=a,O=b,OU=c,C=FR,L=d,ST=e,DC=example,UID=uid-7,emailAddress=crm@example.com";
    assert!(matches(by_name, &cert));
    let by_oid = by_name
        .split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            format!("{}={value}", dotted(name))
        })
        .collect::<Vec<_>>()
        .join(",");
    assert!(matches(&by_oid, &cert), "{by_oid}");
    assert!(matches(
        &by_name.replace("emailAddress", "EMAILADDRESS"),
        &cert
    ));
    assert!(!matches(&by_name.replace("UID=uid-7", "UID=uid-8"), &cert));
}

#[test]
fn attribute_types_outside_the_named_set_and_long_arcs() {
    // serialNumber, an EV jurisdiction OID, arcs after 2.40 (a first octet of 120 and more,
    // which a reader dividing it by 40 prints as 3.0), and long arcs.
    let cert = identity(&[
        (CommonName, "crm"),
        (CustomDnType(vec![2, 5, 4, 5]), "SN-0042"),
        (CustomDnType(vec![1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 3]), "FR"),
        (CustomDnType(vec![2, 40, 7]), "forty"),
        (CustomDnType(vec![2, 999, 1]), "nine-nine-nine"),
        (
            CustomDnType(vec![1, 3, 6, 1, 4, 1, 99_999, 123_456_789_012_345]),
            "long",
        ),
    ]);
    let all = "CN=crm,2.5.4.5=SN-0042,1.3.6.1.4.1.311.60.2.1.3=FR,2.40.7=forty,2.999.1=nine-nine-nine,1.3.6.1.4.1.99999.123456789012345=long";
    assert!(matches(all, &cert));
    for near in [
        all.replace("2.40.7", "2.40.8"),
        all.replace("2.40.7", "2.41.7"),
        all.replace("2.999.1", "2.998.1"),
        all.replace("123456789012345", "123456789012346"),
        all.replace(",2.5.4.5=SN-0042", ""),
    ] {
        assert!(!matches(&near, &cert), "{near}");
    }
}

#[test]
fn values_of_every_string_type_are_compared_as_text() {
    let cases = [
        (
            DnValue::Utf8String("Zoë Ünïcødé ☃".into()),
            "CN=Zoë Ünïcødé ☃",
        ),
        (
            DnValue::PrintableString(PrintableString::try_from("crm pusher").unwrap()),
            "CN=crm pusher",
        ),
        (
            DnValue::BmpString(BmpString::try_from("Zoë ☃").unwrap()),
            "CN=Zo\\C3\\AB \\E2\\98\\83",
        ),
        (
            DnValue::UniversalString(UniversalString::try_from("Zoë ☃ 𝄞").unwrap()),
            "CN=Zoë ☃ 𝄞",
        ),
        (
            DnValue::Ia5String(Ia5String::try_from("crm@example.com").unwrap()),
            "CN=crm@example.com",
        ),
        (
            DnValue::TeletexString(TeletexString::try_from("crm-pusher").unwrap()),
            "CN=crm-pusher",
        ),
    ];
    for (value, configured) in cases {
        let der = certificate_with(&[(CommonName, value.clone())], Vec::new());
        let cert = CertIdentity::from_der(&der).unwrap();
        assert!(matches(configured, &cert), "{value:?} against {configured}");
        assert!(!matches(&format!("{configured}x"), &cert), "{value:?}");
    }
}

#[test]
fn a_value_holding_separators_is_one_value() {
    // One CN that reads as two attributes when compared as text.
    for (value, configured) in [
        ("evil/O=Example", "CN=evil,O=Example"),
        ("evil/O=Example", "/CN=evil/O=Example"),
        ("evil,O=Example", "CN=evil,O=Example"),
        ("evil,O=Example", "/CN=evil/O=Example"),
        ("evil+O=Example", "CN=evil+O=Example"),
        ("evil\\,O=Example", "CN=evil,O=Example"),
        ("evil, O=Example", "CN=evil, O=Example"),
    ] {
        let cert = identity(&[(CommonName, value)]);
        assert!(
            !matches(configured, &cert),
            "CN `{value}` matched `{configured}`"
        );
        let two = identity(&[(CommonName, "evil"), (OrganizationName, "Example")]);
        assert!(matches(configured, &two), "{configured}");
    }
    // Each such value still matches itself, escaped as RFC 4514 writes it.
    for (value, configured) in [
        ("evil/O=Example", "CN=evil/O\\=Example"),
        ("evil/O=Example", "/CN=evil\\/O=Example"),
        ("evil,O=Example", "CN=evil\\,O=Example"),
        ("evil,O=Example", "/CN=evil,O=Example"),
        ("a,b+c", "CN=a\\,b\\+c"),
        ("a,b+c", "CN=a\\2Cb\\2Bc"),
        ("back\\slash", "CN=back\\\\slash"),
        (" spaced ", "CN=\\ spaced\\ "),
        (" spaced ", "CN=\\20spaced\\20"),
        ("#hash", "CN=\\#hash"),
        ("quote\"d", "CN=quote\\\"d"),
    ] {
        let cert = identity(&[(CommonName, value)]);
        assert!(matches(configured, &cert), "{value}: {configured}");
    }
    // White space that is not escaped is not part of the value.
    assert!(!matches(
        "CN= spaced ",
        &identity(&[(CommonName, " spaced ")])
    ));
    assert!(matches("CN= spaced ", &identity(&[(CommonName, "spaced")])));
}

#[test]
fn repeated_attributes_count() {
    use rcgen::DnType::OrganizationalUnitName as OU;
    // rcgen keeps one value per type it names: the second OU under its number.
    let cert = identity(&[
        (CommonName, "crm"),
        (OU, "a"),
        (CustomDnType(vec![2, 5, 4, 11]), "b"),
    ]);
    assert!(matches("OU=b,CN=crm,OU=a", &cert));
    assert!(!matches("CN=crm,OU=a", &cert));
    assert!(!matches("CN=crm,OU=a,OU=a", &cert));
    assert!(!matches("CN=crm,OU=a,OU=b,OU=b", &cert));
}

#[test]
fn alt_names_of_every_kind() {
    let der = certificate_for_tests(
        &[(CommonName, "whoever")],
        vec![
            SanType::DnsName("CRM.Example.com".try_into().unwrap()),
            SanType::URI("spiffe://example.com/crm-pusher".try_into().unwrap()),
            SanType::Rfc822Name("Crm.Pusher@Example.COM".try_into().unwrap()),
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
            SanType::IpAddress("2001:db8::7".parse().unwrap()),
            SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                rcgen::OtherNameValue::Utf8String("crm@example.com".into()),
            )),
        ],
    );
    let cert = CertIdentity::from_der(&der).unwrap();
    let has = |name: &str| cert.has_alt_name(&AltName::parse(name).unwrap());
    for present in [
        "dns:crm.example.com",
        "dns:CRM.EXAMPLE.COM",
        "uri:spiffe://example.com/crm-pusher",
        "email:Crm.Pusher@example.com",
        "email:Crm.Pusher@EXAMPLE.com",
        "ip:10.1.2.3",
        "ip:2001:db8:0::7",
    ] {
        assert!(has(present), "{present}");
    }
    for absent in [
        "dns:crm.example.com.evil.com",
        "dns:10.1.2.3",
        "uri:spiffe://example.com/CRM-pusher",
        "uri:spiffe://example.com/crm-pusher/x",
        "email:crm.pusher@example.com",
        "ip:10.1.2.4",
        "ip:::ffff:10.1.2.3",
        "uri:crm.example.com",
    ] {
        assert!(!has(absent), "{absent}");
    }
    // Only the kinds callers are bound to are kept, each written as the config writes it.
    let shown: Vec<String> = cert.alt_names().iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "dns:crm.example.com",
            "uri:spiffe://example.com/crm-pusher",
            "email:Crm.Pusher@example.com",
            "ip:10.1.2.3",
            "ip:2001:db8::7"
        ]
    );
    let bare = CertIdentity::from_der(&certificate_for_tests(&[], Vec::new())).unwrap();
    assert!(bare.alt_names().is_empty());
    assert!(!matches("CN=whoever", &bare));
}

#[test]
fn configured_names_are_checked() {
    for bad in [
        "",
        "dns",
        "dns:",
        "DNS:crm",
        "dns: crm",
        "url:x",
        "ip:10.1.2",
        "ip:crm",
        "email:crm",
        "email:@example.com",
        "email:crm@",
    ] {
        assert_eq!(
            AltName::parse(bad),
            Err(NameError::BadAltName(bad.to_owned())),
            "{bad}"
        );
    }
    let refused = |text: &str| SubjectName::parse(text).unwrap_err();
    assert_eq!(refused(""), NameError::Empty);
    assert_eq!(refused("  "), NameError::Empty);
    assert_eq!(refused("nonsense"), NameError::NoEquals("nonsense".into()));
    assert_eq!(refused("CN=a,,O=b"), NameError::EmptyAttribute);
    assert_eq!(refused("/CN=a/"), NameError::EmptyAttribute);
    assert_eq!(refused("CN=a,Org=b"), NameError::UnknownType("Org".into()));
    assert_eq!(refused("CN=a,E=b"), NameError::UnknownType("E".into()));
    assert_eq!(refused("CN=a,3.0.7=b"), NameError::BadOid("3.0.7".into()));
    assert_eq!(refused("OID.1.40=b"), NameError::BadOid("1.40".into()));
    assert!(matches!(refused("CN=a\\"), NameError::BadValue(..)));
    assert!(matches!(refused("CN=\\C3"), NameError::BadValue(..)));
    assert!(matches!(refused("CN=#0C"), NameError::BadValue(..)));
    assert!(matches!(refused("CN=#0C01"), NameError::BadValue(..)));
    assert!(matches!(refused("CN=#0201FF"), NameError::BadValue(..)));
    assert!(matches!(refused("CN=#zz"), NameError::BadValue(..)));
    // As configured, for the config's `Debug`.
    let subject = SubjectName::parse("CN=crm, O=Example").unwrap();
    assert_eq!(
        format!("{subject:?} {subject}"),
        "\"CN=crm, O=Example\" CN=crm, O=Example"
    );
}

#[test]
fn what_is_not_a_certificate_names_nobody() {
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x82\xff\xff",
        b"\x30\x03\x30\x01\x02",
    ] {
        assert!(CertIdentity::from_der(garbage).is_none());
    }
}
