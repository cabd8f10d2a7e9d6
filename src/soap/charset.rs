//! The character encodings an envelope may come in: UTF-8 (and US-ASCII, its subset), and the
//! single-byte ISO-8859-1, ISO-8859-15 and windows-1252 that Campaign's own examples and older
//! SOAP stacks (Perl SOAP::Lite, SAAJ) send. All of them write markup with ASCII's bytes, so the
//! scanner reads any of them as it reads UTF-8; only the text of a credential is decoded, and
//! the body is forwarded byte for byte. Any other encoding is refused: one whose bytes are not
//! ASCII's (UTF-16, UTF-32, UTF-7, EBCDIC) would hide markup from the scan, and one of the
//! many other single-byte sets would decode a password to the wrong characters.

use super::ScanError;

/// How the bytes of an envelope are read as characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// UTF-8.
    #[default]
    Utf8,
    /// US-ASCII: read as UTF-8, its superset, as it always was. Named apart so that a
    /// declaration and a Content-Type that name the two are seen to disagree.
    Ascii,
    /// ISO-8859-1: each byte is the code point of the same number.
    Latin1,
    /// ISO-8859-15: ISO-8859-1 with eight code points replaced (the euro sign at 0xA4).
    Latin9,
    /// windows-1252: ISO-8859-1 with printable characters at 0x80–0x9F.
    Windows1252,
}

impl Charset {
    /// The charset a label names (an XML declaration's `encoding`, a `Content-Type` charset),
    /// in any case, or why it is refused.
    pub fn from_label(label: &str) -> Result<Charset, ScanError> {
        // Compared in place: the Content-Type of every call comes through here.
        const LABELS: [(&[&str], Charset); 5] = [
            (&["utf-8", "utf8"], Charset::Utf8),
            (
                &[
                    "us-ascii",
                    "ascii",
                    "ansi_x3.4-1968",
                    "iso646-us",
                    "csascii",
                ],
                Charset::Ascii,
            ),
            (
                &[
                    "iso-8859-1",
                    "iso8859-1",
                    "iso_8859-1",
                    "iso_8859-1:1987",
                    "latin1",
                    "latin-1",
                    "l1",
                    "iso-ir-100",
                    "cp819",
                    "ibm819",
                    "csisolatin1",
                ],
                Charset::Latin1,
            ),
            (
                &[
                    "iso-8859-15",
                    "iso8859-15",
                    "iso_8859-15",
                    "latin-9",
                    "latin9",
                    "l9",
                    "csisolatin9",
                ],
                Charset::Latin9,
            ),
            (
                &["windows-1252", "cp1252", "x-cp1252"],
                Charset::Windows1252,
            ),
        ];
        let label = label.trim();
        LABELS
            .iter()
            .find(|(labels, _)| labels.iter().any(|l| l.eq_ignore_ascii_case(label)))
            .map(|&(_, charset)| charset)
            .ok_or(ScanError::Encoding)
    }

    /// The charset of a `Content-Type` value (`text/xml; charset="ISO-8859-1"`), if it names
    /// one: `Ok(None)` when it names none.
    pub fn of_content_type(value: &[u8]) -> Result<Option<Charset>, ScanError> {
        let value = std::str::from_utf8(value).map_err(|_| ScanError::Encoding)?;
        let charset = value.split(';').skip(1).find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"'))
        });
        charset.map(Charset::from_label).transpose()
    }

    /// Whether a body in this charset is read as UTF-8 is.
    pub fn reads_as_utf8(self) -> bool {
        matches!(self, Charset::Utf8 | Charset::Ascii)
    }

    /// `bytes` as text.
    pub fn decode(self, bytes: &[u8]) -> Result<String, ScanError> {
        match self {
            Charset::Utf8 | Charset::Ascii => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| ScanError::NotUtf8),
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Latin9 => Ok(bytes.iter().map(|&b| latin9(b)).collect()),
            Charset::Windows1252 => Ok(bytes.iter().map(|&b| windows1252(b)).collect()),
        }
    }
}

/// ISO-8859-15's character for `byte`.
fn latin9(byte: u8) -> char {
    match byte {
        0xA4 => '€',
        0xA6 => 'Š',
        0xA8 => 'š',
        0xB4 => 'Ž',
        0xB8 => 'ž',
        0xBC => 'Œ',
        0xBD => 'œ',
        0xBE => 'Ÿ',
        _ => char::from(byte),
    }
}

/// windows-1252's character for `byte`; the five bytes it leaves undefined read as the C1
/// controls of the same number, as the WHATWG encoding standard reads them.
fn windows1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9F => HIGH[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_any_case_and_the_refused_ones() {
        assert_eq!(Charset::from_label("ISO-8859-1"), Ok(Charset::Latin1));
        assert_eq!(Charset::from_label("Latin1"), Ok(Charset::Latin1));
        assert_eq!(Charset::from_label("iso-8859-15"), Ok(Charset::Latin9));
        assert_eq!(
            Charset::from_label("Windows-1252"),
            Ok(Charset::Windows1252)
        );
        assert_eq!(Charset::from_label("US-ASCII"), Ok(Charset::Ascii));
        assert!(Charset::Ascii.reads_as_utf8() && Charset::Utf8.reads_as_utf8());
        assert!(!Charset::Latin1.reads_as_utf8());
        assert_eq!(Charset::from_label(" utf-8 "), Ok(Charset::Utf8));
        for refused in [
            "UTF-16",
            "utf-16le",
            "UTF-32",
            "UTF-7",
            "IBM037",
            "iso-8859-2",
            "x",
        ] {
            assert_eq!(
                Charset::from_label(refused),
                Err(ScanError::Encoding),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_charset_of_a_content_type() {
        let of = |value: &str| Charset::of_content_type(value.as_bytes());
        assert_eq!(of("text/xml"), Ok(None));
        assert_eq!(of("text/xml; charset=utf-8"), Ok(Some(Charset::Utf8)));
        assert_eq!(
            of("text/xml;Charset=\"ISO-8859-1\""),
            Ok(Some(Charset::Latin1))
        );
        assert_eq!(
            of("application/soap+xml; action=\"x\"; charset=windows-1252"),
            Ok(Some(Charset::Windows1252))
        );
        assert_eq!(of("text/xml; charset=UTF-16"), Err(ScanError::Encoding));
    }

    #[test]
    fn each_decodes_its_high_bytes() {
        let bytes = [b'a', 0xA4, 0x80, 0xE9];
        assert_eq!(Charset::Latin1.decode(&bytes).unwrap(), "a\u{A4}\u{80}é");
        assert_eq!(Charset::Latin9.decode(&bytes).unwrap(), "a€\u{80}é");
        assert_eq!(Charset::Windows1252.decode(&bytes).unwrap(), "a¤€é");
        assert_eq!(Charset::Utf8.decode(&bytes), Err(ScanError::NotUtf8));
        assert_eq!(Charset::Utf8.decode("é€".as_bytes()).unwrap(), "é€");
    }
}
