//! Wall-clock time as milliseconds since the Unix epoch, and the few calendar conversions the
//! proxy needs (log folder names, RFC 3339, HTTP dates, the daily reset hour) without a date
//! crate. The key pool never reads the clock: callers pass `now_ms()` in.

use std::time::{SystemTime, UNIX_EPOCH};

pub const SECOND: u64 = 1000;
pub const MINUTE: u64 = 60 * SECOND;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The most recent `hour`:00 UTC at or before `now`: when "today" began for daily counters.
pub fn day_start(now: u64, hour: u64) -> u64 {
    let offset = hour * HOUR;
    (now.saturating_sub(offset)) / DAY * DAY + offset
}

/// `yyyymmdd-hhmmss` in UTC.
pub fn utc_stamp(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / SECOND);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `yyyy-mm-ddThh:mm:ss.mmmZ`
pub fn rfc3339(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / SECOND);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z", ms % SECOND)
}

/// Parses `2026-11-25T01:29:56Z`, with optional fractions and a `+hh:mm` offset.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset_secs) = split_offset(time)?;
    let mut parts = clock.split(':');
    let (h, mi) = (parts.next()?.parse::<i64>().ok()?, parts.next()?.parse::<i64>().ok()?);
    let secs: f64 = parts.next().unwrap_or("0").parse().ok()?;
    // Out of range is no date (and would overflow the arithmetic below).
    if !(valid_date(y, mo, day) && (0..24).contains(&h) && (0..60).contains(&mi) && (0.0..61.0).contains(&secs)) {
        return None;
    }
    let days = days_from_civil(y, mo as u32, day as u32);
    let total = (days * 86_400 + h * 3600 + mi * 60) as f64 + secs - offset_secs as f64;
    (total >= 0.0).then(|| (total * 1000.0).round() as u64)
}

fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let i = time.rfind(['+', '-'])?;
    let (clock, offset) = time.split_at(i);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let (oh, om) = offset[1..].split_once(':').unwrap_or((&offset[1..], "0"));
    let (oh, om) = (oh.parse::<i64>().ok()?, om.parse::<i64>().ok()?);
    ((0..24).contains(&oh) && (0..60).contains(&om)).then(|| (clock, sign * (oh * 3600 + om * 60)))
}

/// A year from 0 to 9999, a month and a day of the month in range.
fn valid_date(y: i64, mo: i64, d: i64) -> bool {
    (0..=9999).contains(&y) && (1..=12).contains(&mo) && (1..=31).contains(&d)
}

/// Parses an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
pub fn parse_http_date(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| Some(*m) == parts.clone().next())? as u32
        + 1;
    parts.next();
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    if !(valid_date(year, i64::from(month), i64::from(day))
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..61).contains(&s))
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs).ok().map(|s| s * SECOND)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Calendar date and time of day in UTC of a Unix second (Howard Hinnant's algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: out-of-range fields (from an upstream's reset header) overflowed the
    /// arithmetic, a panic in debug builds and a wrapped time in release.
    #[test]
    fn out_of_range_dates_are_no_dates() {
        assert_eq!(parse_rfc3339("0-0-0T0:0:0-3000000000000000"), None);
        assert_eq!(parse_rfc3339("99999999999999999-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-25T24:00:00Z"), None);
        assert_eq!(parse_http_date("Wed, 21 Oct 99999999999999999 07:28:00 GMT"), None);
        assert_eq!(parse_http_date("Wed, 21 Oct 2015 07:28:9999999999999999999 GMT"), None);
        assert_eq!(
            parse_rfc3339("2026-11-25T01:29:56.5+05:30"),
            Some(parse_rfc3339("2026-11-24T19:59:56.5Z").unwrap())
        );
    }

    #[test]
    fn formats_and_parses() {
        let t = 1_795_570_196_042;
        assert_eq!(utc_stamp(t), "20261125-012956");
        assert_eq!(rfc3339(t), "2026-11-25T01:29:56.042Z");
        assert_eq!(utc_stamp(951_782_400_000), "20000229-000000");
        assert_eq!(parse_rfc3339("2026-11-25T01:29:56.042Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-25T03:29:56.042+02:00"), Some(t));
        assert_eq!(parse_http_date("Wed, 25 Nov 2026 01:29:56 GMT"), Some(t - 42));
        assert_eq!(parse_http_date("soon"), None);
    }

    #[test]
    fn day_starts_at_the_reset_hour() {
        let t = parse_rfc3339("2026-11-25T01:00:00Z").unwrap();
        assert_eq!(day_start(t, 3), parse_rfc3339("2026-11-24T03:00:00Z").unwrap());
        let t = parse_rfc3339("2026-11-25T03:00:00Z").unwrap();
        assert_eq!(day_start(t, 3), t);
        assert_eq!(day_start(t + 1, 0), parse_rfc3339("2026-11-25T00:00:00Z").unwrap());
    }
}
