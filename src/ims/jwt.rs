//! The Service Account (JWT) credential of seeds 000 and 001: an RS256 JWT signed with the
//! account's private key, exchanged at `POST {ims.host}/ims/exchange/jwt`. `expires_in` comes
//! in milliseconds.
//!
//! Adobe has retired these credentials for its cloud (no new ones since June 2024, converted
//! to OAuth Server-to-Server by March 2026); they remain for the setups of the seeds and for
//! IMS-compatible endpoints that still speak them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::{ExpiresIn, Fetched, ImsClient, ImsError, TokenSource};
use crate::secret::{Secret, SigningKey};

/// How long the JWT we sign is valid: it is used once, at once.
pub(crate) const JWT_LIFETIME: Duration = Duration::from_secs(5 * 60);

pub(crate) struct JwtSource {
    client: ImsClient,
    url: http::Uri,
    client_id: String,
    client_secret: Secret,
    /// `iss`: the organization, `1234ABCD@AdobeOrg`.
    org_id: String,
    /// `sub`: `5678EFGH@techacct.adobe.com`.
    technical_account_id: String,
    key: SigningKey,
    /// `{ims.host}/c/{client_id}`.
    audience: String,
    /// `{ims.host}/s/{metascope}`, each claimed `true`.
    metascope_claims: Vec<String>,
}

/// What a JWT profile is made of.
pub(crate) struct JwtCredential<'a> {
    pub ims_host: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a Secret,
    pub org_id: &'a str,
    pub technical_account_id: &'a str,
    pub key: &'a SigningKey,
    pub metascopes: &'a [String],
}

impl JwtSource {
    pub(crate) fn new(
        client: ImsClient,
        url: http::Uri,
        credential: JwtCredential<'_>,
    ) -> JwtSource {
        let host = credential.ims_host.trim_end_matches('/');
        JwtSource {
            client,
            url,
            client_id: credential.client_id.to_owned(),
            client_secret: credential.client_secret.clone(),
            org_id: credential.org_id.to_owned(),
            technical_account_id: credential.technical_account_id.to_owned(),
            key: credential.key.clone(),
            audience: format!("{host}/c/{}", credential.client_id),
            metascope_claims: credential
                .metascopes
                .iter()
                .map(|m| format!("{host}/s/{m}"))
                .collect(),
        }
    }

    /// The signed JWT, valid until `now + JWT_LIFETIME`.
    pub(crate) fn jwt(&self, now: SystemTime) -> Secret {
        let exp = (now + JWT_LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = Map::new();
        claims.insert("exp".into(), json!(exp));
        claims.insert("iss".into(), json!(self.org_id));
        claims.insert("sub".into(), json!(self.technical_account_id));
        claims.insert("aud".into(), json!(self.audience));
        for claim in &self.metascope_claims {
            claims.insert(claim.clone(), Value::Bool(true));
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
        let signed = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signed.as_bytes()));
        Secret::from(format!("{signed}.{signature}"))
    }
}

impl TokenSource for JwtSource {
    async fn fetch(&self) -> Result<Fetched, ImsError> {
        let jwt = self.jwt(SystemTime::now());
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose())
            .append_pair("jwt_token", jwt.expose())
            .finish();
        self.client
            .request_token(
                &self.url,
                form,
                ExpiresIn::Milliseconds,
                &[&self.client_secret, &jwt],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_as_adobe_documents_them() {
        let key = SigningKey::read(include_bytes!(
            "../../fixtures/keys/test-service-account.key"
        ))
        .unwrap();
        let secret = Secret::from("s");
        let metascopes = [
            "ent_campaign_sdk".to_owned(),
            "ent_analytics_bulk_ingest_sdk".to_owned(),
        ];
        let connector =
            crate::connect::https_connector(&[], Some(Duration::from_secs(1)), &Default::default())
                .unwrap();
        let source = JwtSource::new(
            ImsClient::new(connector, Duration::from_secs(1)),
            "https://ims-na1.adobelogin.com/ims/exchange/jwt"
                .parse()
                .unwrap(),
            JwtCredential {
                ims_host: "https://ims-na1.adobelogin.com/",
                client_id: "abc123",
                client_secret: &secret,
                org_id: "1234ABCD@AdobeOrg",
                technical_account_id: "5678EFGH@techacct.adobe.com",
                key: &key,
                metascopes: &metascopes,
            },
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = source.jwt(now);
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT"}));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({
                "exp": 1_700_000_300,
                "iss": "1234ABCD@AdobeOrg",
                "sub": "5678EFGH@techacct.adobe.com",
                "aud": "https://ims-na1.adobelogin.com/c/abc123",
                "https://ims-na1.adobelogin.com/s/ent_campaign_sdk": true,
                "https://ims-na1.adobelogin.com/s/ent_analytics_bulk_ingest_sdk": true,
            })
        );
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert!(
            public
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .is_ok()
        );
    }
}
