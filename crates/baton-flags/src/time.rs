//! Instants for the `DATE_AFTER` / `DATE_BEFORE` operators. This module owns
//! reading RFC 3339 timestamps (the form Unleash writes and SDKs send) into
//! nanoseconds since the Unix epoch, and reading the clock when a context has
//! no `currentTime`. It must never accept a malformed or out-of-range date by
//! guessing: such a value is unreadable, and its constraint does not match.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub(crate) type Instant = i128;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Now, on the system clock.
pub(crate) fn now() -> Instant {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t`, `z` and a space
/// for `T` are accepted as RFC 3339 allows.
pub(crate) fn parse_rfc3339(text: &str) -> Option<Instant> {
    let bytes = text.trim().as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    if bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    // A leap second (:60) is read as the first instant of the next minute.
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut rest = &bytes[19..];
    let mut nanos: i128 = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let length = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if length == 0 {
            return None;
        }
        // Digits past nanoseconds are dropped, as every parser does.
        for (position, digit) in fraction[..length].iter().enumerate() {
            if position < 9 {
                nanos = nanos * 10 + i128::from(digit - b'0');
            }
        }
        nanos *= 10_i128.pow(9_u32.saturating_sub(length as u32));
        rest = &fraction[length..];
    }

    let offset_seconds: i128 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hours = digits(rest, 1, 2)?;
            let minutes = digits(rest, 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = i128::from(hours * 3600 + minutes * 60);
            if *sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return None,
    };

    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        i128::from(days) * 86_400 + i128::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Some(seconds * NANOS_PER_SECOND + nanos)
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Option<u32> {
    let slice = bytes.get(start..start + count)?;
    slice.iter().try_fold(0_u32, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), exact for every year an RFC 3339 string can hold.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i128 = NANOS_PER_SECOND;

    #[test]
    fn reads_utc_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01.5Z"),
            Some(SECOND + SECOND / 2)
        );
        assert_eq!(
            parse_rfc3339("2022-01-29T13:00:00.000Z"),
            Some(1_643_461_200 * SECOND)
        );
        assert_eq!(
            parse_rfc3339("2022-01-22T13:00:00.000+02:00"),
            parse_rfc3339("2022-01-22T11:00:00Z")
        );
        assert_eq!(
            parse_rfc3339("1969-12-31t23:00:00-01:00"),
            Some(0),
            "lower-case separators and negative offsets"
        );
        assert_eq!(
            parse_rfc3339("2000-02-29 12:00:00z"),
            Some(951_825_600 * SECOND)
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for text in [
            "",
            "yesterday",
            "2022-01-29",
            "2022-01-29T13:00:00",
            "2022-13-01T00:00:00Z",
            "2021-02-29T00:00:00Z",
            "2022-01-29T24:00:00Z",
            "2022-01-29T13:00:00.Z",
            "2022-01-29T13:00:00+2:00",
            "2022-01-29T13:00:00+02:00junk",
            "２０２２-01-29T13:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_clock_is_after_2020() {
        assert!(now() > parse_rfc3339("2020-01-01T00:00:00Z").unwrap_or(i128::MAX));
    }
}
