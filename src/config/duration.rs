//! Durations as the config writes them: `"250ms"`, `"30s"`, `"10m"`, `"24h"`.

use std::time::Duration;

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`. Whitespace and signs are refused,
/// and so is a value that overflows, so that a typo never becomes a surprising timeout.
pub fn parse(text: &str) -> Result<Duration, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration (write e.g. \"250ms\", \"30s\", \"10m\", \"24h\")"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{text}` has no unit (ms, s, m or h)")),
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}` (ms, s, m or h)"
            ));
        }
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("30 s").unwrap_err().contains("unknown unit"));
        assert!(parse("1d").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("not a duration"));
        assert!(parse("-5s").unwrap_err().contains("not a duration"));
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse("18446744073709551615h")
                .unwrap_err()
                .contains("too large")
        );
    }
}
