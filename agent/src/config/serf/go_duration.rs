//! Go's duration syntax (`time.ParseDuration`), which Serf's configs and flags use: a sequence
//! of decimal numbers, each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`,
//! `m`, `h`), such as `300ms`, `1.5h` or `2h45m`; `0` alone is zero. humantime reads most of
//! these but not fractions (`1.5h`) — and a Serf config that Serf accepts must import.

use std::time::Duration;

/// Parses a Go duration. Negative durations are refused: no Serf setting means anything by one.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{text:?} is not a duration: expected a number and a unit, such as 500ms, 30s, 1.5h or 2h45m"
        )
    };
    let s = text.strip_prefix('+').unwrap_or(text);
    if s.starts_with('-') {
        return Err(format!(
            "{text:?} is negative: give a duration of zero or more"
        ));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut rest = s;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        nanos += value * scale;
        rest = next;
    }
    // Go's limit: about 290 years.
    if nanos > i64::MAX as f64 {
        return Err(format!(
            "{text:?} is longer than Go's durations go (about 290 years)"
        ));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// A duration in the form rumor's settings take (`1h 30m`, `500ms`), exact to the millisecond.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_reads() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_go_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_go_duration("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse_go_duration("2h45m"), Ok(ms(9_900_000)));
        assert_eq!(parse_go_duration("72h0m0s"), Ok(ms(259_200_000)));
        assert_eq!(parse_go_duration("1m30.5s"), Ok(ms(90_500)));
        assert_eq!(parse_go_duration("+5s"), Ok(ms(5_000)));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5 s", "1x", "1..5s", "-5s", ".s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_go_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn formats_for_rumors_settings() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        let back = humantime::parse_duration(&format_duration(Duration::from_secs(86_400)));
        assert_eq!(back.unwrap(), Duration::from_secs(86_400));
    }
}
