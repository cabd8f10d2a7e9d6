//! Where a secret comes from: a literal, `{ env = "VAR" }` or `{ file = "PATH" }`.
//!
//! The process environment is read through [`Env`], so tests hand in a map instead of calling
//! `set_var`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};

use crate::secret::Secret;

/// Read access to environment variables.
pub trait Env {
    /// The value of the variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A secret field as written in the config, before it is read.
pub enum SecretSource {
    /// Written in the config.
    Literal(Secret),
    /// `{ env = "VAR" }`: read from the environment.
    Env(String),
    /// `{ file = "PATH" }`: read from a file.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal(****)"),
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl SecretSource {
    /// Reads the secret. A relative file path is taken from `base_dir`, the folder of the config
    /// file. A file's trailing line break is dropped (`echo secret > file` writes one); an empty
    /// secret is refused, since it can only be a mistake.
    pub fn resolve(&self, base_dir: &Path, env: &dyn Env) -> Result<Secret, String> {
        self.read(base_dir, env)
            .map_err(|why| format!("{why}; {SECRET_FORMS}"))
    }

    fn read(&self, base_dir: &Path, env: &dyn Env) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Literal(secret) => return non_empty(secret.clone()),
            SecretSource::Env(name) => env
                .var(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?,
            SecretSource::File(path) => {
                let path = base_dir.join(path);
                let mut text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let kept = text.trim_end_matches(['\r', '\n']).len();
                text.truncate(kept);
                text
            }
        };
        non_empty(Secret::from(value))
    }
}

/// What a config error about a secret ends with: the three ways of giving one.
pub(crate) const SECRET_FORMS: &str =
    r#"a secret is given as the value itself ("…"), as { env = "VAR" } or as { file = "PATH" }"#;

fn non_empty(secret: Secret) -> Result<Secret, String> {
    if secret.is_empty() {
        Err("is empty".to_owned())
    } else {
        Ok(secret)
    }
}

impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a string, { env = "VAR" } or { file = "PATH" }"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(Secret::from(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                r#"expected { env = "VAR" } or { file = "PATH" }"#,
            ));
        };
        let value: String = map.next_value()?;
        let source = match key.as_str() {
            "env" => SecretSource::Env(value),
            "file" => SecretSource::File(PathBuf::from(value)),
            other => return Err(de::Error::unknown_field(other, &["env", "file"])),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "unexpected `{extra}`: give exactly one of `env` or `file`"
            )));
        }
        Ok(source)
    }
}
