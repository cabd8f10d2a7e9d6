//! The store's front with its memory backend: batching, bounds, revocations. The SQLite file
//! and Redis server are exercised over real sockets and files in `tests/it/state.rs`.

use super::*;
use crate::config::StateSettings;

fn memory() -> Arc<State> {
    State::open(
        &StateSettings::memory(),
        10,
        Clock::system(),
        Arc::default(),
    )
    .unwrap()
}

fn seen<'a>(login: &'a str, caller: Option<&'a Arc<str>>, way: &'static str) -> Seen<'a> {
    Seen {
        login,
        caller,
        index: None,
        action: Some("nms:rtEvent#PushEvent"),
        peer: "10.0.0.1".parse().unwrap(),
        way,
        outcome: "ok",
        history_way: "ims",
        history_outcome: "ok",
        at: SystemTime::now(),
    }
}

#[tokio::test]
async fn counts_are_batched_and_written_once() {
    let state = memory();
    let caller: Arc<str> = Arc::from("crm-events");
    for _ in 0..3 {
        state.count(&seen("mc", Some(&caller), "ims"));
    }
    state.count(&seen("oldop", None, "transparent"));
    {
        let pending = state.lock_pending();
        assert_eq!(pending.logins.len(), 2);
        assert_eq!(pending.requests(), 4);
        assert_eq!(
            pending.legacy.len(),
            1,
            "one legacy-way subject: {:?}",
            pending.legacy
        );
    }
    state.flush().await;
    assert!(state.lock_pending().is_empty());
    let report = state.inventory(10).await.unwrap();
    let mc = report.logins.iter().find(|l| l.login == "mc").unwrap();
    assert_eq!(mc.requests, 3);
    assert_eq!(mc.caller.as_deref(), Some("crm-events"));
    assert_eq!(mc.actions[0].requests, 3);
    // A second flush with nothing new changes nothing.
    state.flush().await;
    let again = state.inventory(10).await.unwrap();
    assert_eq!(
        again
            .logins
            .iter()
            .find(|l| l.login == "mc")
            .unwrap()
            .requests,
        3
    );
}

#[tokio::test]
async fn a_batch_sent_twice_is_written_once() {
    let state = memory();
    state.count(&seen("mc", None, "legacy"));
    let batch = Arc::new(Batch {
        id: 42,
        ..std::mem::take(&mut *state.lock_pending())
    });
    let now = state.now();
    for _ in 0..2 {
        state.write(Some(Arc::clone(&batch)), now).await.unwrap();
    }
    let report = state.inventory(10).await.unwrap();
    assert_eq!(report.logins[0].requests, 1);
}

#[tokio::test]
async fn logins_past_the_bound_are_dropped_least_recently_seen_first() {
    let state = memory();
    for i in 0..15 {
        state.count(&seen(&format!("login{i:02}"), None, "refused"));
        state.flush().await;
    }
    let report = state.inventory(10).await.unwrap();
    assert_eq!(report.logins.len(), 10);
    assert_eq!(report.dropped, 5);
}

#[test]
fn revocations_are_bounded_and_expire() {
    let revocations = Revocations::default();
    let now = 1_000;
    revocations.add(
        (0..MAX_REVOKED as u64 + 10).map(|i| (format!("n{i}"), now + 10 + i)),
        now,
    );
    assert_eq!(revocations.len(), MAX_REVOKED);
    assert!(
        !revocations.contains("n0"),
        "the soonest to expire goes first"
    );
    assert!(revocations.contains(&format!("n{}", MAX_REVOKED as u64 + 9)));
    revocations.add([("past".to_owned(), now - 1)], now);
    assert!(!revocations.contains("past"), "an expired one is not kept");
}
