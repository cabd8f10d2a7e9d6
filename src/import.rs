//! `imsbridge import-nlserver`: turns the string of Adobe's "Adobe Analytics connector
//! provisioning",
//! `nlserver config -setimsjwtauth:Organization_Id/Client_Id/Technical_Account_ID/<Client_Secret>/<Base64_encoded_Private_Key>`,
//! into a `jwt` profile for the config. The client secret and the decoded private key go to
//! files readable by their owner only, which the profile references; they are never printed.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use crate::secret::Secret;
use crate::secret::SigningKey;

/// The five parts, in order, as the seed names them.
const PARTS: [&str; 5] = [
    "organization id",
    "client id",
    "technical account id",
    "client secret",
    "base64-encoded private key",
];

/// A Service Account credential taken from an nlserver string.
#[derive(Debug)]
pub struct NlserverCredential {
    pub org_id: String,
    pub client_id: String,
    pub technical_account_id: String,
    pub client_secret: Secret,
    /// The private key as PEM text.
    pub private_key: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "expected five parts separated by `/`: Organization_Id/Client_Id/Technical_Account_ID/Client_Secret/Base64_encoded_Private_Key; found {0}"
    )]
    Parts(usize),
    #[error("part {number} ({name}) {why}", name = PARTS[*number - 1])]
    Part { number: usize, why: String },
    #[error("{path} already exists; remove it or choose another --name or --dir")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn part(number: usize, why: impl Into<String>) -> ImportError {
    ImportError::Part {
        number,
        why: why.into(),
    }
}

/// Reads `Org/Client/TechAccount/Secret/Base64Key`, with or without its `-setimsjwtauth:`
/// prefix. Whatever follows the fourth `/` is the key, line breaks (copied from a terminal)
/// included.
pub fn parse(text: &str) -> Result<NlserverCredential, ImportError> {
    let text = text.trim();
    let text = text.strip_prefix("-setimsjwtauth:").unwrap_or(text);
    let parts: Vec<&str> = text.splitn(5, '/').collect();
    if parts.len() != 5 {
        return Err(ImportError::Parts(parts.len()));
    }
    let [org_id, client_id, technical_account_id, client_secret, key] = parts[..] else {
        unreachable!("five parts");
    };
    if !org_id.ends_with("@AdobeOrg") || org_id.len() == "@AdobeOrg".len() {
        return Err(part(1, "should look like 1234ABCD@AdobeOrg"));
    }
    if client_id.is_empty()
        || !client_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(part(
            2,
            "should be the credential's client id: letters, digits and dashes",
        ));
    }
    if !technical_account_id.ends_with("@techacct.adobe.com")
        || technical_account_id.len() == "@techacct.adobe.com".len()
    {
        return Err(part(3, "should look like 5678EFGH@techacct.adobe.com"));
    }
    if client_secret.is_empty() || client_secret.contains(char::is_whitespace) {
        return Err(part(
            4,
            "should be the credential's client secret, without spaces",
        ));
    }
    let compact: String = key
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .collect();
    let pem = STANDARD_NO_PAD
        .decode(compact)
        .map_err(|_| part(5, "is not base64 (make it with `base64 ./private.key`)"))?;
    let pem = String::from_utf8(pem)
        .ok()
        .filter(|pem| pem.contains("-----BEGIN "))
        .ok_or_else(|| part(5, "is base64, but not of a PEM private key"))?;
    SigningKey::read(pem.as_bytes())
        .map_err(|error| part(5, format!("decodes to a PEM that {error}")))?;
    Ok(NlserverCredential {
        org_id: org_id.to_owned(),
        client_id: client_id.to_owned(),
        technical_account_id: technical_account_id.to_owned(),
        client_secret: Secret::from(client_secret),
        private_key: Secret::from(pem),
    })
}

/// Writes `{dir}/{name}.client-secret` and `{dir}/{name}.private-key.pem` (mode 0600, never
/// over an existing file) and returns the `[profiles.{name}]` table that references them.
pub fn write_profile(
    credential: &NlserverCredential,
    name: &str,
    dir: &Path,
    metascopes: &[String],
) -> Result<String, ImportError> {
    let dir = std::path::absolute(dir).map_err(|source| ImportError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let secret_path = dir.join(format!("{name}.client-secret"));
    let key_path = dir.join(format!("{name}.private-key.pem"));
    for path in [&secret_path, &key_path] {
        if path.exists() {
            return Err(ImportError::Exists { path: path.clone() });
        }
    }
    write_private(
        &secret_path,
        &format!("{}\n", credential.client_secret.expose()),
    )?;
    write_private(&key_path, credential.private_key.expose())?;
    let metascopes = metascopes
        .iter()
        .map(|m| format!("{m:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "[profiles.{name}]\n\
         type = \"jwt\"\n\
         client_id = {client_id:?}\n\
         client_secret = {{ file = {secret:?} }}\n\
         org_id = {org_id:?}\n\
         technical_account_id = {account:?}\n\
         private_key = {{ file = {key:?} }}\n\
         metascopes = [{metascopes}]\n",
        client_id = credential.client_id,
        secret = secret_path.display().to_string(),
        org_id = credential.org_id,
        account = credential.technical_account_id,
        key = key_path.display().to_string(),
    ))
}

fn write_private(path: &Path, content: &str) -> Result<(), ImportError> {
    let failed = |source| ImportError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(content.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    const KEY: &str = include_str!("../fixtures/keys/test-service-account.key");

    fn nlserver_string(key_b64: &str) -> String {
        format!(
            "1234ABCD@AdobeOrg/0123456789abcdef/5678EFGH@techacct.adobe.com/p8e-SECRET-value/{key_b64}"
        )
    }

    #[test]
    fn reads_the_seed_000_string() {
        let encoded = STANDARD.encode(KEY);
        for text in [
            nlserver_string(&encoded),
            format!("-setimsjwtauth:{}", nlserver_string(&encoded)),
            // `base64` wraps at 76 columns; a paste may keep the breaks.
            nlserver_string(
                &encoded
                    .as_bytes()
                    .chunks(76)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ] {
            let credential = parse(&text).unwrap();
            assert_eq!(credential.org_id, "1234ABCD@AdobeOrg");
            assert_eq!(credential.client_id, "0123456789abcdef");
            assert_eq!(
                credential.technical_account_id,
                "5678EFGH@techacct.adobe.com"
            );
            assert_eq!(credential.client_secret.expose(), "p8e-SECRET-value");
            assert_eq!(credential.private_key.expose().trim_start(), KEY);
        }
    }

    #[test]
    fn says_which_part_is_wrong() {
        let good = STANDARD.encode(KEY);
        let cases = [
            ("only/three/parts".to_owned(), "found 3"),
            (
                nlserver_string(&good).replace("1234ABCD@AdobeOrg", "1234ABCD"),
                "part 1 (organization id)",
            ),
            (
                nlserver_string(&good).replace("0123456789abcdef", "not a client id!"),
                "part 2 (client id)",
            ),
            (
                nlserver_string(&good)
                    .replace("5678EFGH@techacct.adobe.com", "someone@example.com"),
                "part 3 (technical account id)",
            ),
            (
                nlserver_string(&good).replace("p8e-SECRET-value", ""),
                "part 4 (client secret)",
            ),
            (
                nlserver_string("!!!not base64!!!"),
                "part 5 (base64-encoded private key) is not base64",
            ),
            (
                nlserver_string(&STANDARD.encode("hello")),
                "part 5 (base64-encoded private key) is base64, but not of a PEM private key",
            ),
            (
                nlserver_string(&STANDARD.encode(KEY.replace("PRIVATE KEY", "CERTIFICATE"))),
                "part 5 (base64-encoded private key) decodes to a PEM that is a PEM `CERTIFICATE`",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "`{expected}` not in: {message}");
            assert!(!message.contains("p8e-SECRET-value"), "{message}");
        }
    }

    #[test]
    fn writes_owner_only_files_and_a_profile_that_loads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("imsbridge-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let credential = parse(&nlserver_string(&STANDARD.encode(KEY))).unwrap();
        let profile = write_profile(
            &credential,
            "messagecenter",
            &dir,
            &["ent_campaign_sdk".to_owned()],
        )
        .unwrap();
        assert!(!profile.contains("p8e-SECRET-value"));
        assert!(!profile.contains("BEGIN"));
        for file in [
            "messagecenter.client-secret",
            "messagecenter.private-key.pem",
        ] {
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("messagecenter.private-key.pem")).unwrap(),
            KEY
        );
        // The printed table is a valid profile of a config.
        let config = format!("[upstream]\nurl = \"https://campaign.example.com\"\n\n{profile}");
        let parsed =
            crate::config::Config::parse(&config, &dir, &std::collections::HashMap::new()).unwrap();
        let crate::config::ProfileKind::Jwt {
            client_secret,
            metascopes,
            ..
        } = &parsed.profiles[0].kind
        else {
            panic!("a jwt profile");
        };
        assert_eq!(client_secret.expose(), "p8e-SECRET-value");
        assert_eq!(metascopes, &["ent_campaign_sdk"]);
        // Never over an existing file.
        let again = write_profile(&credential, "messagecenter", &dir, &[]).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
