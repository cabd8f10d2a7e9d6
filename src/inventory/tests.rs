use std::time::Duration;

use super::*;

fn seen<'a>(login: &'a str, action: &'a str, peer: [u8; 4], at: u64) -> Seen<'a> {
    Seen {
        login,
        caller: None,
        index: None,
        action: Some(action),
        peer: IpAddr::from(peer),
        way: "transparent",
        outcome: "ok",
        history_way: "ims",
        history_outcome: "ok",
        at: UNIX_EPOCH + Duration::from_secs(at),
    }
}

fn logins(report: &Report) -> Vec<&str> {
    report.logins.iter().map(|l| l.login.as_str()).collect()
}

#[test]
fn a_login_keeps_its_actions_peers_ways_and_times() {
    let inventory = Inventory::new(10);
    inventory.count(&seen("mc", "nms:rtEvent#PushEvent", [10, 0, 0, 1], 1000));
    inventory.count(&seen("mc", "nms:rtEvent#PushEvent", [10, 0, 0, 2], 1010));
    inventory.count(&Seen {
        way: "-",
        outcome: "wrong_password",
        history_way: "ims",
        history_outcome: "ok",
        ..seen("mc", "xtk:session#Logon", [10, 0, 0, 1], 1005)
    });
    let report = inventory.report(UNIX_EPOCH + Duration::from_secs(2000));
    let mc = &report.logins[0];
    assert_eq!(mc.login, "mc");
    assert_eq!(mc.caller, None);
    assert_eq!((mc.first_seen, mc.last_seen, mc.requests), (1000, 1010, 3));
    assert_eq!(
        mc.actions,
        [
            Named {
                name: "nms:rtEvent#PushEvent".into(),
                requests: 2
            },
            Named {
                name: "xtk:session#Logon".into(),
                requests: 1
            }
        ]
    );
    assert_eq!(mc.peers[0].name, "10.0.0.1");
    assert_eq!(mc.peers[0].requests, 2);
    assert_eq!(
        mc.counts,
        [
            WayCount {
                way: "-".into(),
                outcome: "wrong_password".into(),
                requests: 1
            },
            WayCount {
                way: "transparent".into(),
                outcome: "ok".into(),
                requests: 2
            }
        ]
    );
    assert_eq!(mc.last_hour, None, "by minute for configured callers only");
}

#[test]
fn past_the_bound_the_least_recently_seen_login_goes_but_never_a_callers() {
    let inventory = Inventory::new(3);
    let caller: Arc<str> = Arc::from("crm-events");
    inventory.configure([("mc", &caller)].into_iter(), 3);
    inventory.count(&seen("mc", "a:b#C", [10, 0, 0, 1], 1));
    for (i, login) in ["a", "b", "c"].iter().enumerate() {
        inventory.count(&seen(login, "a:b#C", [10, 0, 0, 1], 10 + i as u64));
    }
    // `a` is seen again: `b` is now the least recently seen.
    inventory.count(&seen("a", "a:b#C", [10, 0, 0, 1], 20));
    inventory.count(&seen("d", "a:b#C", [10, 0, 0, 1], 21));
    let report = inventory.report(UNIX_EPOCH);
    assert_eq!(logins(&report), ["d", "a", "c", "mc"]);
    assert_eq!(report.dropped, 1);
    assert_eq!(report.max_logins, 3);
    for i in 0..100 {
        inventory.count(&seen(&format!("x{i}"), "a:b#C", [10, 0, 0, 1], 100 + i));
    }
    let report = inventory.report(UNIX_EPOCH);
    assert_eq!(report.logins.len(), 4, "three others and the caller");
    assert!(logins(&report).contains(&"mc"));
    assert_eq!(report.dropped, 101);
}

#[test]
fn actions_peers_and_names_are_bounded() {
    let inventory = Inventory::new(10);
    let long = "x".repeat(1000);
    for i in 0..40u8 {
        inventory.count(&seen(&long, &format!("a:b#M{i}{long}"), [10, 0, 0, i], 1));
    }
    let report = inventory.report(UNIX_EPOCH);
    let entry = &report.logins[0];
    assert_eq!(entry.login.len(), MAX_NAME_BYTES);
    assert_eq!(entry.actions.len(), MAX_ACTIONS);
    assert!(entry.actions.iter().all(|a| a.name.len() == MAX_NAME_BYTES));
    assert_eq!(entry.other_actions, 40 - MAX_ACTIONS as u64);
    assert_eq!(entry.peers.len(), MAX_PEERS);
    assert_eq!(entry.other_peers, 40 - MAX_PEERS as u64);
    // A multi-byte character at the cut is not split.
    assert_eq!(cut(&"é".repeat(100)).len(), MAX_NAME_BYTES);
    assert_eq!(
        cut(&format!("a{}", "é".repeat(100))).len(),
        MAX_NAME_BYTES - 1
    );
}

#[test]
fn a_callers_last_hour_is_counted_by_share() {
    let inventory = Inventory::new(10);
    let caller: Arc<str> = Arc::from("crm-events");
    inventory.configure([("mc", &caller)].into_iter(), 10);
    let at = |minute: u64| UNIX_EPOCH + Duration::from_secs(minute * 60);
    for (minute, way, outcome) in [
        // Over an hour before the report: not counted.
        (10, "ims", "ok"),
        (100, "ims", "ok"),
        (101, "local", "ok"),
        (130, "legacy", "ok"),
        (150, "-", "wrong_password"),
        (150, "ims", "no_token"),
    ] {
        inventory.count(&Seen {
            login: "mc",
            caller: Some(&caller),
            index: Some(0),
            action: None,
            peer: IpAddr::from([10, 0, 0, 1]),
            way,
            outcome,
            history_way: "ims",
            history_outcome: "ok",
            at: at(minute),
        });
    }
    let report = inventory.report(at(155));
    assert_eq!(report.logins[0].caller.as_deref(), Some("crm-events"));
    assert_eq!(
        report.logins[0].last_hour,
        Some(Shares {
            ims: 2,
            legacy: 1,
            refused: 2
        })
    );
}

#[test]
fn replicas_inventories_merge() {
    let one = Inventory::new(10);
    let two = Inventory::new(10);
    one.count(&seen("mc", "a:b#C", [10, 0, 0, 1], 100));
    two.count(&seen("mc", "a:b#C", [10, 0, 0, 2], 50));
    two.count(&seen("mc", "a:b#D", [10, 0, 0, 1], 200));
    two.count(&seen("crm", "a:b#C", [10, 0, 0, 3], 150));
    let merged = Report::merge([one.report(UNIX_EPOCH), two.report(UNIX_EPOCH)]);
    assert_eq!(logins(&merged), ["mc", "crm"]);
    let mc = &merged.logins[0];
    assert_eq!((mc.first_seen, mc.last_seen, mc.requests), (50, 200, 3));
    assert_eq!(mc.actions[0].name, "a:b#C");
    assert_eq!(mc.actions[0].requests, 2);
    assert_eq!(mc.peers[0].name, "10.0.0.1");
    assert_eq!(mc.peers[0].requests, 2);
    assert_eq!(mc.counts[0].requests, 3);
}

#[test]
fn a_callers_place_from_before_a_reload_is_checked() {
    let inventory = Inventory::new(10);
    let (one, two): (Arc<str>, Arc<str>) = (Arc::from("one"), Arc::from("two"));
    inventory.configure([("a", &one), ("b", &two)].into_iter(), 10);
    // Reloaded: `b` is first now; a request routed before says `a` is at 0.
    inventory.configure([("b", &two), ("a", &one)].into_iter(), 10);
    inventory.count(&Seen {
        index: Some(0),
        ..seen("a", "x:y#Z", [10, 0, 0, 1], 5)
    });
    let report = inventory.report(UNIX_EPOCH);
    assert_eq!(logins(&report), ["a"]);
    assert_eq!(report.logins[0].caller.as_deref(), Some("one"));
}

#[test]
fn the_printed_callers_say_what_cannot_be_known() {
    let inventory = Inventory::new(10);
    inventory.count(&seen("with space", "a:b#C", [10, 0, 0, 1], 1));
    inventory.count(&seen("a.b", "a:b#C", [10, 0, 0, 1], 2));
    inventory.count(&seen("a,b", "a:b#C", [10, 0, 0, 1], 3));
    for i in 0..(MAX_PEERS as u8 + 1) {
        inventory.count(&seen("roaming", "a:b#C", [10, 0, 1, i], 4));
    }
    let mut report = inventory.report(UNIX_EPOCH);
    let mut out = Vec::new();
    command::write(&report, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("# login \"with space\" cannot be configured"),
        "{text}"
    );
    assert!(text.contains("name = \"legacy-a.b\""), "{text}");
    assert!(text.contains("name = \"legacy-a-b\""), "{text}");
    assert!(
        text.contains("profile = \"FILL IN\""),
        "no profile configured yet: {text}"
    );
    let roaming = &text[text.find("login = \"roaming\"").unwrap()..];
    assert!(
        roaming.contains("# allow_from: it called from more addresses"),
        "{roaming}"
    );
    report.profiles = vec!["marketing".into(), "execution".into()];
    let mut out = Vec::new();
    command::write(&report, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("profile = \"marketing\"   # or one of: execution"),
        "{text}"
    );
}
