//! rclone's `--bwlimit` grammar, checked before rclone sees it, so that
//! `bwlimit = "eight megs"` fails `check-config` instead of the 3 a.m. run.
//!
//! The grammar is rclone's (`fs/bwtimetable.go`, `fs/sizesuffix.go`):
//!
//! * a bandwidth: `off`, or a number with an optional suffix `b`, `k`,
//!   `M`, `G`, `T`, `P`, `E` (any case; `Ki`, `KiB`... too; no suffix is
//!   KiB/s), optionally `UP:DOWN` (`"1M:off"`);
//! * a timetable: tokens `HH:MM,BW` or `Day-HH:MM,BW` (`Mon`, `monday`...)
//!   separated by spaces (`"08:00,512k 12:00,10M 23:00,off"`).
//!
//! Differences, on purpose: numbers are plain decimals (rclone's Go
//! `ParseFloat` also takes `inf`, `nan` and hex floats, which mean nothing
//! as a rate); `;` and repeated spaces between tokens, which rclone 1.70
//! and later accept and Debian's 1.60 refuses, are accepted (the online
//! check asks the installed rclone).

use std::fmt;

/// Why a `--bwlimit` value is not one rclone takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BwLimitError {
    /// The part of the value that is wrong.
    pub part: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for BwLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an rclone bandwidth: {} (write e.g. \"8M\", \"1M:off\" or a \
             timetable \"08:00,512k 19:00,off\" / \"Mon-08:00,1M\")",
            self.part, self.reason
        )
    }
}

impl std::error::Error for BwLimitError {}

/// Checks `value` against rclone's `--bwlimit` grammar.
///
/// # Errors
///
/// [`BwLimitError`] naming the first part rclone would refuse.
pub fn check_bwlimit(value: &str) -> Result<(), BwLimitError> {
    if value.is_empty() {
        return Err(error(value, "it is empty"));
    }
    if !value.contains([' ', ',']) {
        return check_pair(value);
    }
    let mut tokens = value.split([' ', ';']).filter(|t| !t.is_empty()).peekable();
    if tokens.peek().is_none() {
        return Err(error(value, "it has no time slot"));
    }
    tokens.try_for_each(check_slot)
}

fn error(part: &str, reason: &'static str) -> BwLimitError {
    BwLimitError {
        part: part.to_owned(),
        reason,
    }
}

/// `HH:MM,BW` or `Day-HH:MM,BW`.
fn check_slot(token: &str) -> Result<(), BwLimitError> {
    let Some((when, rate)) = token.split_once(',').filter(|(_, r)| !r.contains(',')) else {
        return Err(error(
            token,
            "a time slot is HH:MM,BANDWIDTH or Day-HH:MM,BANDWIDTH",
        ));
    };
    let time = match when.split_once('-') {
        None => when,
        Some((day, time)) => {
            if time.contains('-') {
                return Err(error(when, "a time is HH:MM or Day-HH:MM"));
            }
            check_weekday(day)?;
            time
        }
    };
    check_time(time)?;
    check_pair(rate)
}

fn check_weekday(day: &str) -> Result<(), BwLimitError> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let day_lower = day.to_lowercase();
    if DAYS.iter().any(|d| *d == day_lower || d[..3] == day_lower) {
        Ok(())
    } else {
        Err(error(day, "not a weekday (Mon, Tuesday, ...)"))
    }
}

/// rclone's check: five bytes, an hour 0-23 in the first two, a minute
/// 0-59 in the last two (the middle byte is not looked at).
fn check_time(time: &str) -> Result<(), BwLimitError> {
    let bad = |reason| Err(error(time, reason));
    let (Some(hh), Some(mm)) = (time.get(0..2), time.get(3..)) else {
        return bad("a time is HH:MM");
    };
    if time.len() != 5 {
        return bad("a time is HH:MM");
    }
    match (go_atoi(hh), go_atoi(mm)) {
        (Some(h), Some(m)) if (0..=23).contains(&h) && (0..=59).contains(&m) => Ok(()),
        (Some(h), Some(_)) if !(0..=23).contains(&h) => bad("the hour must be 00 to 23"),
        (Some(_), Some(_)) => bad("the minute must be 00 to 59"),
        _ => bad("a time is HH:MM"),
    }
}

/// Go's `strconv.Atoi`: an optional sign and at least one digit.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `BW` or `UP:DOWN`, split at the first colon.
fn check_pair(pair: &str) -> Result<(), BwLimitError> {
    match pair.split_once(':') {
        None => check_size(pair),
        Some((up, down)) => check_size(up).and(check_size(down)),
    }
}

/// One rate: `off`, or a number with a size suffix.
fn check_size(size: &str) -> Result<(), BwLimitError> {
    if size.is_empty() {
        return Err(error(size, "a bandwidth is missing"));
    }
    if size.eq_ignore_ascii_case("off") {
        return Ok(());
    }
    let lower = size.to_ascii_lowercase();
    let number = ["ib", "i", "b", "k", "m", "g", "t", "p", "e"]
        .iter()
        .find_map(|suffix| strip_unit(&lower, suffix))
        .unwrap_or(&lower);
    if number.ends_with('i') || number.ends_with("ib") {
        return Err(error(size, "\"i\" must follow k, M, G, T, P or E"));
    }
    if !is_decimal(number) {
        return Err(error(
            size,
            "not a number with an optional unit b, k, M, G, T, P",
        ));
    }
    Ok(())
}

/// `text` without its unit `suffix`: `Ki`/`KiB` count as `k`.
fn strip_unit<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let rest = text.strip_suffix(suffix)?;
    match suffix {
        "i" | "ib" => rest
            .strip_suffix(['k', 'm', 'g', 't', 'p', 'e'])
            .or(Some(text)),
        _ => Some(rest),
    }
}

/// A non-negative decimal: digits with at most one `.`, and an optional
/// exponent (`1e3`); at least one digit before the exponent.
fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (mantissa, exponent) = match s.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let dots = mantissa.bytes().filter(|b| *b == b'.').count();
    let mantissa_ok = digits > 0 && dots <= 1 && digits + dots == mantissa.len();
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn rclones_accepted_forms_pass() {
        for ok in [
            "8M",
            "8m",
            "512k",
            "512",
            "1.5M",
            "0.5G",
            "10b",
            "1T",
            "1P",
            "1E",
            "2Ki",
            "2KiB",
            "1.5Mi",
            "off",
            "OFF",
            "0",
            "1M:off",
            "off:10M",
            "10:00",
            "08:00",
            "08:00,512k 12:00,10M 23:00,off",
            "Mon-10:00,2M",
            "monday-10:00,2M Sat-00:00,off",
            "Sunday-23:59,1M:2M",
            "08:00,512k;12:00,1M",
            "08:00,512k  12:00,1M",
            "10x00,1M",
            "1e3k",
        ] {
            assert_eq!(check_bwlimit(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn rclones_rejected_forms_fail_naming_the_part() {
        for (bad, part) in [
            ("eight megs", "eight"),
            ("", ""),
            ("8X", "8X"),
            ("M", "m"),
            ("-1M", "-1M"),
            ("inf", "inf"),
            ("nan", "nan"),
            ("1Q", "1Q"),
            ("1iB", "1iB"),
            ("1M:", ""),
            ("24:00,1M", "24:00"),
            ("08:60,1M", "08:60"),
            ("8:00,1M", "8:00"),
            ("Mon-Tue-08:00,1M", "Mon-Tue-08:00"),
            ("Mo-08:00,1M", "Mo"),
            ("08:00,1M,2M", "08:00,1M,2M"),
            ("1M 2M", "1M"),
            ("08:00,eight", "eight"),
        ] {
            let err = check_bwlimit(bad).expect_err(bad);
            assert_eq!(
                err.part.to_ascii_lowercase(),
                part.to_ascii_lowercase(),
                "{bad:?}: {err}"
            );
        }
    }
}
