//! Verdicts on histories made by hand.

use super::*;
use crate::state::{DayCount, LegacySpan, ShadowKey, Tally};

const DAY: u64 = 86_400;
/// 2026-12-08 12:00:00 UTC.
const NOW: u64 = 1_796_731_200;

fn settings() -> CutoverSettings {
    CutoverSettings {
        min_comparisons: 5,
        quiet_days: 7,
    }
}

fn count(days_ago: u64, subject: &str, way: &str, outcome: &str, requests: u64) -> DayCount {
    DayCount {
        day: day_of(NOW - days_ago * DAY),
        subject: subject.to_owned(),
        way: way.to_owned(),
        outcome: outcome.to_owned(),
        requests,
    }
}

fn one(mode: Mode, history: &History) -> CallerVerdict {
    let caller = Caller {
        name: "crm",
        login: "mc",
        mode,
        shadow_actions: &[],
    };
    report(&[caller], history, Vec::new(), settings(), 90, NOW)
        .callers
        .remove(0)
}

fn tally(days_ago: u64, comparisons: u64, mismatches: u64) -> (ShadowKey, Tally) {
    (
        ShadowKey {
            day: day_of(NOW - days_ago * DAY),
            caller: "crm".to_owned(),
            action: "xtk:queryDef#ExecuteQuery".to_owned(),
        },
        Tally {
            comparisons,
            matches: comparisons - mismatches,
            mismatches,
        },
    )
}

#[test]
fn a_shadow_caller_is_ready_with_enough_comparisons_and_no_recent_mismatch() {
    let mut history = History::default();
    history.shadow.push(tally(1, 3, 0));
    let verdict = one(Mode::Shadow, &history);
    assert_eq!(verdict.verdict, "not_yet");
    assert!(
        verdict.summary.contains("3 of 5 comparisons"),
        "{}",
        verdict.summary
    );
    history.shadow.push(tally(0, 2, 0));
    let verdict = one(Mode::Shadow, &history);
    assert_eq!(verdict.verdict, "ready", "{}", verdict.summary);
    assert_eq!(verdict.numbers["comparisons"], 5);
    // A mismatch three days ago: not yet, whatever the count, and it says when.
    history.shadow.push(tally(3, 10, 1));
    history.last_mismatch.insert(
        ("crm".into(), "xtk:queryDef#ExecuteQuery".into()),
        NOW - 3 * DAY,
    );
    let verdict = one(Mode::Shadow, &history);
    assert_eq!(verdict.verdict, "not_yet");
    assert!(
        verdict.summary.contains(&day_of(NOW - 3 * DAY)),
        "{}",
        verdict.summary
    );
    // Eight days ago: outside the quiet days.
    history.last_mismatch.insert(
        ("crm".into(), "xtk:queryDef#ExecuteQuery".into()),
        NOW - 8 * DAY,
    );
    assert_eq!(one(Mode::Shadow, &history).verdict, "ready");
}

#[test]
fn a_canary_caller_is_ready_with_enough_clean_ims_way_calls() {
    let mut history = History::default();
    history.days.push(count(2, "caller:crm", "canary", "ok", 4));
    history
        .days
        .push(count(2, "caller:crm", "legacy", "ok", 40));
    assert_eq!(
        one(Mode::Canary { percent: 10.0 }, &history).verdict,
        "not_yet"
    );
    history.days.push(count(0, "caller:crm", "canary", "ok", 1));
    let verdict = one(Mode::Canary { percent: 10.0 }, &history);
    assert_eq!(verdict.verdict, "ready", "{}", verdict.summary);
    assert_eq!(verdict.numbers["ims_way_calls"], 5);
    // A refusal on the legacy share does not count; one on the ims way does.
    history
        .days
        .push(count(1, "caller:crm", "legacy", "refused", 3));
    assert_eq!(
        one(Mode::Canary { percent: 10.0 }, &history).verdict,
        "ready"
    );
    history
        .days
        .push(count(6, "caller:crm", "canary", "failed", 1));
    let verdict = one(Mode::Canary { percent: 10.0 }, &history);
    assert_eq!(verdict.verdict, "not_yet");
    assert!(
        verdict.summary.contains("refused or failed"),
        "{}",
        verdict.summary
    );
}

#[test]
fn an_ims_callers_old_operator_is_unused_without_a_recent_legacy_way_call() {
    let mut history = History::default();
    let verdict = one(Mode::Ims, &history);
    assert_eq!(verdict.verdict, "old_operator_unused");
    assert!(
        verdict.summary.contains("none in the history"),
        "{}",
        verdict.summary
    );
    history.legacy.insert(
        "login:mc".into(),
        LegacySpan {
            first: NOW - 40 * DAY,
            last: NOW - 10 * DAY,
        },
    );
    let verdict = one(Mode::Ims, &history);
    assert_eq!(verdict.verdict, "old_operator_unused");
    assert_eq!(verdict.numbers["last_legacy_call"], day_of(NOW - 10 * DAY));
    history.legacy.get_mut("login:mc").unwrap().last = NOW;
    let verdict = one(Mode::Ims, &history);
    assert_eq!(verdict.verdict, "old_operator_used");
    assert!(
        verdict.summary.contains(&day_of(NOW)),
        "{}",
        verdict.summary
    );
}

#[test]
fn a_legacy_caller_has_no_evidence_and_is_told_what_gives_some() {
    let verdict = one(Mode::Legacy, &History::default());
    assert_eq!(verdict.verdict, "no_evidence");
    assert!(verdict.summary.contains("shadow_actions"));
    assert!(verdict.summary.contains("canary_percent"));
}

#[test]
fn bars_cover_thirty_days_oldest_first() {
    let mut history = History::default();
    history.days.push(count(0, "caller:crm", "ims", "ok", 7));
    history
        .days
        .push(count(0, "caller:crm", "ims", "refused", 1));
    history
        .days
        .push(count(29, "caller:crm", "legacy", "ok", 2));
    history
        .days
        .push(count(30, "caller:crm", "legacy", "ok", 100));
    history.days.push(count(0, "caller:other", "ims", "ok", 50));
    let days = one(Mode::Ims, &history).days;
    assert_eq!(days.len(), BAR_DAYS as usize);
    assert_eq!(days[0].day, day_of(NOW - 29 * DAY));
    assert_eq!(days[0].ways["legacy"], 2);
    let today = days.last().unwrap();
    assert_eq!(today.ways["ims"], 8);
    assert_eq!(today.refused_or_failed, 1);
}

#[test]
fn unowned_logins_are_listed_most_recent_first() {
    let report = report(
        &[],
        &History::default(),
        vec![("a".into(), NOW - DAY), ("b".into(), NOW)],
        settings(),
        90,
        NOW,
    );
    assert_eq!(report.unowned_logins[0].login, "b");
    assert_eq!(report.unowned_logins[1].last_call_day, day_of(NOW - DAY));
    assert_eq!(report.days_are, "UTC");
    assert_eq!(report.history_since, day_of(NOW - 89 * DAY));
}
