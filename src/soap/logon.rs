//! The answers imsbridge gives to `xtk:session#Logon` and `#Logoff` itself, in Campaign's exact
//! shape: clients (acc-js-sdk among them) find `SOAP-ENV:Body`, an unprefixed `LogonResponse`,
//! and its results by position, checking their literal `xsi:type`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use quick_xml::escape::escape;

use crate::dates::iso8601;
use crate::sessions::Issued;

const ENVELOPE_OPEN: &str = "<?xml version='1.0'?>\n\
    <SOAP-ENV:Envelope xmlns:xsd='http://www.w3.org/2001/XMLSchema' \
    xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:ns='urn:xtk:session' \
    xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'>\n<SOAP-ENV:Body>\n";
const ENVELOPE_CLOSE: &str = "</SOAP-ENV:Body>\n</SOAP-ENV:Envelope>\n";

/// `LogonResponse`: the session token, the session information (`serverInfo`, `userInfo`), the
/// security token.
pub(crate) fn logon_response(
    login: &str,
    issued: &Issued,
    ttl: Duration,
    now: SystemTime,
) -> Bytes {
    let ttl = ttl.as_secs();
    Bytes::from(format!(
        "{ENVELOPE_OPEN}<LogonResponse xmlns='urn:xtk:session' \
         SOAP-ENV:encodingStyle='http://schemas.xmlsoap.org/soap/encoding/'>\n\
         <pstrSessionToken xsi:type='xsd:string'>{session}</pstrSessionToken>\n\
         <pSessionInfo xsi:type='ns:Element' \
         SOAP-ENV:encodingStyle='http://xml.apache.org/xml-soap/literalxml'>\
         <sessionInfo>\
         <serverInfo advisedClientBuildNumber='0' allowSQL='false' buildNumber='0' \
         databaseId='' defaultNameSpace='cus' fohVersion='2' instanceName='imsbridge' \
         majNumber='8' minClientBuildNumber='0' minNumber='0' minNumberTechnical='0' \
         releaseName='imsbridge' securityTimeOut='{ttl}' serverDate='{date}' servicePack='0' \
         sessionTimeOut='{ttl}' useVault='false'/>\
         <userInfo datakitInDatabase='true' homeDir='' instanceLocale='en_US' locale='en_US' \
         login='{login}' loginCS='{login}' loginId='0' noConsoleCnx='true' orgUnitId='0' \
         theme='' timezone='UTC'/>\
         </sessionInfo></pSessionInfo>\n\
         <pstrSecurityToken xsi:type='xsd:string'>{security}</pstrSecurityToken>\n\
         </LogonResponse>\n{ENVELOPE_CLOSE}",
        session = escape(issued.session.expose()),
        security = escape(issued.security.expose()),
        login = escape(login),
        date = iso8601(now),
    ))
}

/// `LogoffResponse`: no result.
pub(crate) fn logoff_response() -> Bytes {
    Bytes::from(format!(
        "{ENVELOPE_OPEN}<LogoffResponse xmlns='urn:xtk:session' \
         SOAP-ENV:encodingStyle='http://schemas.xmlsoap.org/soap/encoding/'/>\n{ENVELOPE_CLOSE}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::soap::Scanner;
    use std::time::UNIX_EPOCH;

    #[test]
    fn logon_response_in_campaign_shape() {
        let issued = Issued {
            session: Secret::from("ibs1.abc.def"),
            security: Secret::from("ibx1.ghi"),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_795_316_706);
        let body = logon_response("mc<&>", &issued, Duration::from_secs(86_400), now);
        let text = std::str::from_utf8(&body).unwrap();
        for expected in [
            "<SOAP-ENV:Body>",
            "<LogonResponse xmlns='urn:xtk:session'",
            "<pstrSessionToken xsi:type='xsd:string'>ibs1.abc.def</pstrSessionToken>",
            "<pSessionInfo xsi:type='ns:Element'",
            "<sessionInfo><serverInfo ",
            "serverDate='2026-11-22T03:05:06.000Z'",
            "<userInfo ",
            "login='mc&lt;&amp;&gt;'",
            "<pstrSecurityToken xsi:type='xsd:string'>ibx1.ghi</pstrSecurityToken>",
        ] {
            assert!(text.contains(expected), "`{expected}` missing: {text}");
        }
        // Well-formed: our own scanner reads it through.
        let envelope = Scanner::new().feed(&body, true).unwrap().unwrap();
        assert_eq!(envelope.method.name, "LogonResponse");
        assert_eq!(
            envelope.credential().unwrap().value.expose(),
            "ibs1.abc.def"
        );
        let logoff = logoff_response();
        let envelope = Scanner::new().feed(&logoff, true).unwrap().unwrap();
        assert_eq!(envelope.method.name, "LogoffResponse");
    }
}
