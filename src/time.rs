//! Wall-clock dates as the protocols write them: RFC 3339 (HLS `EXT-X-PROGRAM-DATE-TIME`,
//! JSON), and Icecast's ISO 8601 and RFC 822 forms. UTC, no time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch as (year, month, day, hour, minute, second, weekday 0 = Sunday).
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, usize) {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ((days + 4).rem_euclid(7)) as usize;
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60, weekday)
}

/// `2024-03-05T10:00:00+0000`, as Icecast writes `server_start_iso8601`.
pub fn iso8601(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+0000")
}

/// `Tue, 05 Mar 2024 10:00:00 +0000`, as Icecast writes `server_start`.
pub fn rfc822(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s, wd) = civil(time);
    format!("{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} +0000", DAYS[wd], MONTHS[(mo - 1) as usize])
}

/// `2026-11-29T18:00:00.000Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = civil(time);
    let millis = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_millis());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_format_like_icecast_and_hls() {
        let t = UNIX_EPOCH + Duration::from_secs(1_709_632_800); // 2024-03-05 10:00:00 UTC
        assert_eq!(iso8601(t), "2024-03-05T10:00:00+0000");
        assert_eq!(rfc822(t), "Tue, 05 Mar 2024 10:00:00 +0000");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00+0000");
        assert_eq!(rfc3339(t + Duration::from_millis(250)), "2024-03-05T10:00:00.250Z");
    }
}
