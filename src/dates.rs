//! Calendar dates in UTC, for people (`check`) and for SOAP answers (Logon's `serverDate`),
//! without a calendar crate: the civil-from-days algorithm (H. Hinnant) is a few lines.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-22 03:00:00 UTC`.
pub(crate) fn utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The UTC day of `seconds` since the epoch: `2026-11-22`.
pub(crate) fn day_of(seconds: u64) -> String {
    day_name(day_number(seconds))
}

/// The UTC day of `seconds` since the epoch, counted from the epoch's.
pub(crate) fn day_number(seconds: u64) -> u32 {
    u32::try_from(seconds / 86_400).unwrap_or(u32::MAX)
}

/// The name of a day counted from the epoch's: `2026-11-22`.
pub(crate) fn day_name(day: u32) -> String {
    utc(UNIX_EPOCH + std::time::Duration::from_secs(u64::from(day) * 86_400))[..10].to_owned()
}

/// `2026-11-22T03:05:06.000Z` (ISO 8601, as Campaign writes `serverDate`).
pub(crate) fn iso8601(time: SystemTime) -> String {
    let utc = utc(time);
    // "YYYY-MM-DD HH:MM:SS UTC" → "YYYY-MM-DDTHH:MM:SS.000Z"
    format!("{}T{}.000Z", &utc[..10], &utc[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
        let time = UNIX_EPOCH + Duration::from_secs(1_795_316_706);
        assert_eq!(utc(time), "2026-11-22 03:05:06 UTC");
        assert_eq!(iso8601(time), "2026-11-22T03:05:06.000Z");
        assert_eq!(day_of(1_795_316_706), "2026-11-22");
        assert_eq!(
            day_of(1_795_305_599),
            "2026-11-21",
            "a second before midnight UTC"
        );
    }
}
