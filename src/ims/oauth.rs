//! OAuth Server-to-Server: `POST {ims.host}/ims/token/v3` with the client credentials grant.
//! `expires_in` comes in seconds.

use super::{ExpiresIn, Fetched, ImsClient, ImsError, TokenSource};
use crate::secret::Secret;

pub(crate) struct OAuthSource {
    client: ImsClient,
    url: http::Uri,
    client_id: String,
    client_secret: Secret,
    /// Comma-separated, as IMS wants them.
    scope: String,
}

impl OAuthSource {
    pub(crate) fn new(
        client: ImsClient,
        url: http::Uri,
        client_id: String,
        client_secret: Secret,
        scopes: &[String],
    ) -> OAuthSource {
        OAuthSource {
            client,
            url,
            client_id,
            client_secret,
            scope: scopes.join(","),
        }
    }

    fn form(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose())
            .append_pair("scope", &self.scope)
            .finish()
    }
}

impl TokenSource for OAuthSource {
    async fn fetch(&self) -> Result<Fetched, ImsError> {
        self.client
            .request_token(
                &self.url,
                self.form(),
                ExpiresIn::Seconds,
                &[&self.client_secret],
            )
            .await
    }
}
