#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Table tests of the GFS retention decision (`retention::expired`, pure).

use jiff::{Timestamp, tz::TimeZone};
use tvk_api::policy::{DayOfWeek, MonthOfYear, RetentionConfig};
use tvk_control_plane::retention::{RetainedBackup, Standing, expired};

/// Backups named by their date: `("2026-11-01T02:00", Standing)`; the uid is the date.
fn backups(tz: &str, items: &[(&str, Standing)]) -> Vec<RetainedBackup> {
    let tz = TimeZone::get(tz).unwrap();
    items
        .iter()
        .map(|(at, standing)| RetainedBackup {
            uid: (*at).to_string(),
            taken_at: at
                .parse::<jiff::civil::DateTime>()
                .unwrap()
                .to_zoned(tz.clone())
                .unwrap(),
            standing: *standing,
        })
        .collect()
}

fn daily(from: &str, days: i64) -> Vec<String> {
    let start: jiff::civil::DateTime = from.parse().unwrap();
    (0..days)
        .map(|d| {
            start
                .checked_add(jiff::Span::new().days(d))
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .collect()
}

fn now() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

use Standing::{Committed as C, JustCommitted as J, Other as O};

#[test]
fn latest_keeps_the_newest_n_and_counts_the_just_committed_one() {
    let policy = RetentionConfig {
        latest: Some(2),
        ..RetentionConfig::default()
    };
    let b = backups(
        "UTC",
        &[
            ("2026-11-01T02:00", C),
            ("2026-11-02T02:00", C),
            ("2026-11-03T02:00", C),
            ("2026-11-04T02:00", J),
        ],
    );
    assert_eq!(
        expired(&policy, &b, now()),
        ["2026-11-01T02:00", "2026-11-02T02:00"],
        "oldest first; the just-committed one takes a place among the latest"
    );
}

#[test]
fn backups_that_are_not_committed_neither_count_nor_expire() {
    let policy = RetentionConfig {
        latest: Some(1),
        ..RetentionConfig::default()
    };
    let b = backups(
        "UTC",
        &[
            ("2026-11-01T02:00", O), // failed
            ("2026-11-02T02:00", C),
            ("2026-11-03T02:00", O), // in progress
            ("2026-11-04T02:00", C),
        ],
    );
    assert_eq!(expired(&policy, &b, now()), ["2026-11-02T02:00"]);
}

#[test]
fn the_just_committed_backup_never_expires_even_when_it_is_not_the_newest() {
    // A policy that would keep only the newest backup, where the just-committed one is older
    // than another committed backup (e.g. a clock change).
    let policy = RetentionConfig {
        latest: Some(1),
        ..RetentionConfig::default()
    };
    let b = backups("UTC", &[("2026-11-01T02:00", J), ("2026-11-02T02:00", C)]);
    assert!(expired(&policy, &b, now()).is_empty());
}

#[test]
fn weekly_keeps_one_backup_per_week_on_the_configured_day() {
    // Daily backups for 5 weeks from Monday 2026-11-02; Sundays are 8, 15, 22, 29 Nov, 6 Dec.
    let days = daily("2026-11-02T02:00", 35);
    let items: Vec<(&str, Standing)> = days.iter().map(|d| (d.as_str(), C)).collect();
    let policy = RetentionConfig {
        latest: Some(3),
        weekly: Some(2),
        day_of_week: Some(DayOfWeek::Sunday),
        ..RetentionConfig::default()
    };
    let gone = expired(&policy, &backups("UTC", &items), now());
    let kept: Vec<&String> = days.iter().filter(|d| !gone.contains(d)).collect();
    assert_eq!(
        kept,
        [
            "2026-11-29T02:00", // Sunday, 2nd newest week with a Sunday backup
            "2026-12-04T02:00",
            "2026-12-05T02:00",
            "2026-12-06T02:00", // Sunday and among the latest
        ]
    );
}

#[test]
fn weekly_counts_weeks_that_have_a_matching_backup() {
    // Only two Sundays have a backup, months apart: both are kept for weekly: 2.
    let policy = RetentionConfig {
        weekly: Some(2),
        day_of_week: Some(DayOfWeek::Sunday),
        ..RetentionConfig::default()
    };
    let b = backups(
        "UTC",
        &[
            ("2026-01-04T02:00", C), // Sunday
            ("2026-03-01T02:00", C), // Sunday
            ("2026-03-02T02:00", C), // Monday
            ("2026-03-08T02:00", C), // Sunday
        ],
    );
    assert_eq!(
        expired(&policy, &b, now()),
        ["2026-01-04T02:00", "2026-03-02T02:00"]
    );
}

#[test]
fn two_backups_on_the_same_day_keep_the_newer_one() {
    let policy = RetentionConfig {
        weekly: Some(1),
        day_of_week: Some(DayOfWeek::Sunday),
        ..RetentionConfig::default()
    };
    let b = backups("UTC", &[("2026-03-01T02:00", C), ("2026-03-01T14:00", C)]);
    assert_eq!(expired(&policy, &b, now()), ["2026-03-01T02:00"]);
}

#[test]
fn monthly_keeps_the_backup_of_the_configured_date() {
    let days = daily("2026-01-01T02:00", 120);
    let items: Vec<(&str, Standing)> = days.iter().map(|d| (d.as_str(), C)).collect();
    let policy = RetentionConfig {
        latest: Some(1),
        monthly: Some(3),
        date_of_month: Some(15),
        ..RetentionConfig::default()
    };
    let gone = expired(&policy, &backups("UTC", &items), now());
    let kept: Vec<&String> = days.iter().filter(|d| !gone.contains(d)).collect();
    assert_eq!(
        kept,
        [
            "2026-02-15T02:00",
            "2026-03-15T02:00",
            "2026-04-15T02:00",
            "2026-04-30T02:00", // latest
        ]
    );
}

#[test]
fn yearly_keeps_one_backup_of_the_configured_month_per_year() {
    let policy = RetentionConfig {
        yearly: Some(2),
        month_of_year: Some(MonthOfYear::March),
        ..RetentionConfig::default()
    };
    let b = backups(
        "UTC",
        &[
            ("2024-03-10T02:00", C),
            ("2025-03-01T02:00", C),
            ("2025-03-20T02:00", C),
            ("2025-04-01T02:00", C),
            ("2026-03-05T02:00", C),
            ("2026-06-01T02:00", C),
        ],
    );
    assert_eq!(
        expired(&policy, &b, now()),
        [
            "2024-03-10T02:00", // the third most recent year
            "2025-03-01T02:00", // an older backup of a kept month
            "2025-04-01T02:00",
            "2026-06-01T02:00",
        ]
    );
}

#[test]
fn all_rules_together_keep_the_union() {
    let policy = RetentionConfig {
        latest: Some(1),
        weekly: Some(1),
        day_of_week: Some(DayOfWeek::Wednesday),
        monthly: Some(1),
        date_of_month: Some(1),
        yearly: Some(1),
        month_of_year: Some(MonthOfYear::January),
    };
    let b = backups(
        "UTC",
        &[
            ("2026-01-10T02:00", C), // yearly (January)
            ("2026-01-20T02:00", C), // newer January backup: the yearly one
            ("2026-02-01T02:00", C), // monthly, but an older month
            ("2026-03-01T02:00", C), // monthly (1st of the newest month with one)
            ("2026-03-04T02:00", C), // Wednesday
            ("2026-03-05T02:00", C), // latest
        ],
    );
    assert_eq!(
        expired(&policy, &b, now()),
        ["2026-01-10T02:00", "2026-02-01T02:00"]
    );
}

#[test]
fn days_are_days_of_the_schedule_time_zone() {
    // 23:30 on Saturday in UTC is Sunday 00:30 in Berlin.
    let policy = RetentionConfig {
        weekly: Some(1),
        day_of_week: Some(DayOfWeek::Sunday),
        ..RetentionConfig::default()
    };
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    let at = |s: &str| s.parse::<Timestamp>().unwrap().to_zoned(berlin.clone());
    let b = vec![
        RetainedBackup {
            uid: "sat-utc-sun-berlin".into(),
            taken_at: at("2026-03-07T23:30:00Z"),
            standing: C,
        },
        RetainedBackup {
            uid: "mon".into(),
            taken_at: at("2026-03-09T02:00:00Z"),
            standing: C,
        },
    ];
    assert_eq!(expired(&policy, &b, now()), ["mon"]);
}

#[test]
fn a_policy_without_counts_keeps_everything() {
    let b = backups("UTC", &[("2026-01-01T02:00", C), ("2026-01-02T02:00", C)]);
    assert!(expired(&RetentionConfig::default(), &b, now()).is_empty());
}

#[test]
fn a_backup_from_the_future_means_a_skewed_clock_and_nothing_expires() {
    let policy = RetentionConfig {
        latest: Some(1),
        ..RetentionConfig::default()
    };
    let b = backups(
        "UTC",
        &[
            ("2026-01-01T02:00", C),
            ("2026-01-02T02:00", C),
            ("2026-01-03T02:00", J),
        ],
    );
    let before: Timestamp = "2026-01-03T01:00:00Z".parse().unwrap();
    assert!(expired(&policy, &b, before).is_empty());
    // Within the allowed skew it proceeds.
    let close: Timestamp = "2026-01-03T01:58:00Z".parse().unwrap();
    assert_eq!(
        expired(&policy, &b, close),
        ["2026-01-01T02:00", "2026-01-02T02:00"]
    );
}

#[test]
fn the_decision_does_not_depend_on_list_order() {
    let policy = RetentionConfig {
        latest: Some(2),
        ..RetentionConfig::default()
    };
    let mut b = backups(
        "UTC",
        &[
            ("2026-01-01T02:00", C),
            ("2026-01-02T02:00", C),
            ("2026-01-03T02:00", C),
            ("2026-01-04T02:00", C),
        ],
    );
    let first = expired(&policy, &b, now());
    b.reverse();
    assert_eq!(expired(&policy, &b, now()), first);
    assert_eq!(first, ["2026-01-01T02:00", "2026-01-02T02:00"]);
}
