//! Service Account (JWT) profiles end to end: the stand-in IMS verifies the JWT's signature
//! with the credential's public key and checks every claim.

use std::time::Duration;

use crate::support::*;
use base64::Engine;
use imsbridge::demo::{SEED_002_AFTER, StandInCampaign, StandInIms};

async fn stack_with(
    profile: &str,
    metascopes_granted: &[&str],
) -> (StandInIms, StandInCampaign, Proxy) {
    let ims = StandInIms::start().await.unwrap();
    add_jwt_client(&ims, metascopes_granted);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let config = with_profile(&config_text(&ims.url(), &campaign.url(), "", ""), profile);
    let proxy = Proxy::start(&config).await;
    (ims, campaign, proxy)
}

#[tokio::test]
async fn a_good_exchange_carries_the_call() {
    let profile = jwt_profile(
        &format!("{{ file = \"{TEST_KEY}\" }}"),
        "[\"ent_campaign_sdk\"]",
    );
    let (ims, campaign, proxy) = stack_with(&profile, &["ent_campaign_sdk"]).await;
    let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = &campaign.requests()[0];
    assert_eq!(seen.text(), SEED_002_AFTER);
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", ims.issued()[0]).as_str())
    );
    assert_eq!(ims.token_requests(), 1);
}

#[tokio::test]
async fn the_key_in_base64_as_seed_000_keeps_it() {
    let pem = std::fs::read(TEST_KEY).unwrap();
    // `base64 ./private.key > private.key.base64`: wrapped at 76 columns.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pem);
    let wrapped: String = encoded
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\n", String::from_utf8_lossy(l)))
        .collect();
    let dir = std::env::temp_dir().join(format!("imsbridge-jwt-b64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("private.key.base64");
    std::fs::write(&path, wrapped).unwrap();
    let profile = jwt_profile(
        &format!("{{ file = \"{}\" }}", path.display()),
        "[\"ent_campaign_sdk\"]",
    );
    let (_ims, _campaign, proxy) = stack_with(&profile, &["ent_campaign_sdk"]).await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_ims() {
    let profile = jwt_profile(
        &format!("{{ file = \"{OTHER_KEY}\" }}"),
        "[\"ent_campaign_sdk\"]",
    );
    let (_ims, campaign, proxy) = stack_with(&profile, &["ent_campaign_sdk"]).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "not available");
    assert!(campaign.requests().is_empty());
    let ready = get(proxy.admin, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .contains("invalid_signature: Could not match JWT signature to any of the bindings"),
        "{}",
        ready.body
    );
}

#[tokio::test]
async fn a_missing_metascope_is_refused_by_ims() {
    let profile = jwt_profile(
        &format!("{{ file = \"{TEST_KEY}\" }}"),
        "[\"ent_analytics_bulk_ingest_sdk\"]",
    );
    let (_ims, _campaign, proxy) = stack_with(&profile, &["ent_campaign_sdk"]).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "not available");
    let ready = get(proxy.admin, "/readyz").await;
    assert!(
        ready.body.contains("invalid_scope: Invalid metascope."),
        "{}",
        ready.body
    );
}

#[tokio::test]
async fn expires_in_is_read_in_milliseconds() {
    let ims = StandInIms::start().await.unwrap();
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    // 3000 in `expires_in`: three seconds, not fifty minutes.
    ims.set_lifetime(Duration::from_secs(3));
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let profile = jwt_profile(
        &format!("{{ file = \"{TEST_KEY}\" }}"),
        "[\"ent_campaign_sdk\"]",
    );
    let proxy = Proxy::start(&with_profile(
        &config_text(&ims.url(), &campaign.url(), "", ""),
        &profile,
    ))
    .await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    assert_eq!(ims.token_requests(), 1);
    // Refreshed ahead of a three-second expiry (fifty minutes would mean no second fetch),
    // once: no stampede of fetches when it comes.
    let fetched = eventually("a second token fetch", Duration::from_secs(20), || async {
        let fetched = ims.token_requests();
        (fetched >= 2).then_some(fetched)
    })
    .await;
    assert_eq!(fetched, 2, "{fetched} token requests at the first refresh");
    // Calls go through, and once the new token is in (its answer may still be on its way),
    // with it.
    let newest = eventually(
        "the second token issued",
        Duration::from_secs(20),
        || async {
            let issued = ims.issued();
            (issued.len() >= 2).then(|| format!("Bearer {}", issued.last().unwrap()))
        },
    )
    .await;
    eventually(
        "a call with the new token",
        Duration::from_secs(20),
        || async {
            assert_eq!(
                post(proxy.addr, seed_002(&credential()), &[]).await.status,
                200
            );
            let last = campaign.requests().last().unwrap().clone();
            (last.header("authorization") == Some(newest.as_str())).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn claims_that_do_not_match_the_credential_are_refused() {
    let good = jwt_profile(
        &format!("{{ file = \"{TEST_KEY}\" }}"),
        "[\"ent_campaign_sdk\"]",
    );
    for (wrong, from, to) in [
        ("iss", ORG_ID, "FFFF0000FFFF0000@AdobeOrg"),
        (
            "sub",
            TECHNICAL_ACCOUNT_ID,
            "FFFF0000FFFF0000@techacct.adobe.com",
        ),
    ] {
        let (_ims, _campaign, proxy) =
            stack_with(&good.replace(from, to), &["ent_campaign_sdk"]).await;
        post(proxy.addr, seed_002(&credential()), &[])
            .await
            .assert_fault(500, "Server", "not available");
        let ready = get(proxy.admin, "/readyz").await;
        assert!(
            ready
                .body
                .contains(&format!("invalid_token: JWT {wrong} is not")),
            "{wrong}: {}",
            ready.body
        );
    }
}

#[tokio::test]
async fn the_exchange_url_can_be_overridden() {
    // Seed 001's "IMS Exchange URL" field, apart from "IMS Host" (the JWT audience).
    let profile = jwt_profile(
        &format!("{{ file = \"{TEST_KEY}\" }}"),
        "[\"ent_campaign_sdk\"]",
    );
    let ims = StandInIms::start().await.unwrap();
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let config = with_profile(&config_text(&ims.url(), &campaign.url(), "", ""), &profile).replace(
        "[ims]\n",
        &format!(
            "[ims]\nexchange_url = \"{}/tenant-a/ims/exchange/jwt\"\n",
            ims.url()
        ),
    );
    let proxy = Proxy::start(&config).await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    assert_eq!(ims.paths(), ["/tenant-a/ims/exchange/jwt"]);
}
