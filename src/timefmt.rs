//! Timestamps: the text forms users' data really holds, parsed to microseconds since the
//! Unix epoch, and formatted back as RFC 3339. Time zones (offsets and DST rules) come from
//! the system's IANA database through jiff. Day numbers are Howard Hinnant's days-from-civil
//! (proleptic Gregorian), kept because PostgreSQL's dates run from 4713 BC to 5874897 AD and
//! jiff's civil dates stop at ±9999.

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day number (days since 1970-01-01).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

pub const MICROS_PER_DAY: i64 = 86_400_000_000;
/// PostgreSQL's epoch, 2000-01-01, in days and microseconds since the Unix epoch (its binary
/// dates and timestamps count from there).
pub const PG_EPOCH_DAYS: i64 = 10_957;
pub const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * MICROS_PER_DAY;

/// A parsed timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Microseconds since 1970-01-01T00:00:00 in the text's own zone (or UTC if it had one).
    pub micros: i64,
    /// The offset the text carried, in seconds east of UTC; `None` when it had none.
    pub offset: Option<i32>,
    /// The text was a bare date.
    pub date_only: bool,
    /// Fraction digits beyond microseconds were rounded (PostgreSQL keeps microseconds).
    pub rounded: bool,
    /// The time was 24:00:00 (the end of the day, which is the next day's start).
    pub end_of_day: bool,
}

impl Parsed {
    /// Microseconds since the Unix epoch in UTC, assuming `assume` (seconds east) if the text had no offset.
    pub fn utc_micros(&self, assume: i32) -> i64 {
        self.micros - self.offset.unwrap_or(assume) as i64 * 1_000_000
    }

    /// Microseconds since the Unix epoch in UTC, placing a time without an offset in `zone`
    /// (`None` when the zone's rules do not reach that year).
    pub fn utc_micros_in(&self, zone: &Zone) -> Option<i64> {
        match self.offset {
            Some(o) => Some(self.micros - o as i64 * 1_000_000),
            None => zone.to_utc(self.micros),
        }
    }
}

/// A zone assumed for local times (text without an offset): a fixed offset, or an IANA
/// zone whose offset depends on the date (daylight-saving time).
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    /// Seconds east of UTC.
    Fixed(i32),
    /// An IANA zone from the system database, with its name as given.
    Named(String, jiff::tz::TimeZone),
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::Fixed(0)
    }
}

impl Zone {
    /// `UTC`, `Z`, `+02:00`, `-0530`, or an IANA name such as `Europe/Athens` looked up in the
    /// system's zone database (/usr/share/zoneinfo, Debian's tzdata).
    pub fn parse(s: &str) -> Result<Zone, String> {
        if let Some(o) = parse_offset(s) {
            return Ok(Zone::Fixed(o));
        }
        let name = s.trim();
        match jiff::tz::TimeZone::get(name) {
            Ok(tz) => Ok(Zone::Named(name.to_string(), tz)),
            Err(_) => Err(format!(
                "'{name}' is neither UTC, an offset such as +02:00, nor a time zone of the system's \
                 zone database (an IANA name such as Europe/Athens; Debian package tzdata)"
            )),
        }
    }

    /// Microseconds since the Unix epoch of a local time (microseconds since 1970-01-01T00:00
    /// on the local clock). PostgreSQL's rule for the hours DST makes odd: a time that does not
    /// exist (skipped when clocks go forward) takes the offset in force before the change; a
    /// time that happens twice (clocks go back) takes the offset in force after it. `None`
    /// outside the years the zone rules cover (±9999).
    pub fn to_utc(&self, local_micros: i64) -> Option<i64> {
        use jiff::tz::AmbiguousOffset;
        let tz = match self {
            Zone::Fixed(o) => return Some(local_micros - *o as i64 * 1_000_000),
            Zone::Named(_, tz) => tz,
        };
        let secs = local_micros.div_euclid(1_000_000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        let dt = jiff::civil::DateTime::new(
            i16::try_from(y).ok()?,
            m as i8,
            d as i8,
            (rem / 3600) as i8,
            (rem / 60 % 60) as i8,
            (rem % 60) as i8,
            0,
        )
        .ok()?;
        let offset = match tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset,
            AmbiguousOffset::Gap { before, .. } => before,
            AmbiguousOffset::Fold { after, .. } => after,
        };
        Some(local_micros - offset.seconds() as i64 * 1_000_000)
    }

    pub fn name(&self) -> String {
        match self {
            Zone::Fixed(0) => "UTC".into(),
            Zone::Fixed(o) => {
                let a = o.abs();
                format!("{}{:02}:{:02}", if *o < 0 { '-' } else { '+' }, a / 3600, a / 60 % 60)
            }
            Zone::Named(n, _) => n.clone(),
        }
    }
}

/// Parses `YYYY-MM-DD`, optionally followed by `T`/space and `HH:MM[:SS[.fraction]]`, and an
/// optional zone: `Z`, `±HH`, `±HHMM`, `±HH:MM` or ` UTC`/` GMT`.
pub fn parse_timestamp(s: &str) -> Option<Parsed> {
    let b = s.trim().as_bytes();
    let mut p = Cursor { b, i: 0 };
    let neg_year = p.eat(b'-');
    let year = p.digits_exact(4)? as i64;
    let year = if neg_year { -year } else { year };
    // PostgreSQL has no year 0 (1 BC comes before 1 AD) and refuses it.
    if year == 0 {
        return None;
    }
    if !p.eat(b'-') {
        return None;
    }
    let month = p.digits_exact(2)?;
    if !p.eat(b'-') {
        return None;
    }
    let day = p.digits_exact(2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if p.done() {
        return Some(Parsed {
            micros: days * MICROS_PER_DAY,
            offset: None,
            date_only: true,
            rounded: false,
            end_of_day: false,
        });
    }
    if !(p.eat(b'T') || p.eat(b't') || p.eat(b' ')) {
        return None;
    }
    let hour = p.digits_exact(2)? as i64;
    if !p.eat(b':') {
        return None;
    }
    let minute = p.digits_exact(2)? as i64;
    let mut second = 0i64;
    let mut micros = 0i64;
    let mut rounded = false;
    if p.eat(b':') {
        second = p.digits_exact(2)? as i64;
        if p.eat(b'.') || p.eat(b',') {
            let start = p.i;
            let mut frac: i64 = 0;
            let mut n = 0;
            let mut round_up = false;
            while let Some(d) = p.digit() {
                if n < 6 {
                    frac = frac * 10 + d as i64;
                } else if n == 6 {
                    round_up = d >= 5;
                    rounded |= d != 0;
                } else if d != 0 {
                    rounded = true;
                }
                n += 1;
            }
            if p.i == start {
                return None;
            }
            for _ in n..6 {
                frac *= 10;
            }
            micros = frac + round_up as i64;
        }
    }
    // 24:00:00 is allowed by ISO 8601 and PostgreSQL as the end of the day.
    let valid_time =
        (hour < 24 && minute < 60 && second < 60) || (hour == 24 && minute == 0 && second == 0 && micros == 0);
    if !valid_time {
        return None;
    }
    let offset = parse_zone(&mut p)?;
    if !p.done() {
        return None;
    }
    let micros = days * MICROS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
    Some(Parsed { micros, offset, date_only: false, rounded, end_of_day: hour == 24 })
}

/// Why text shaped like an ISO 8601 timestamp (or date) is not one [`parse_timestamp`] reads:
/// the part that is out of range or not read, for the error message. `None` when the text is
/// not shaped like one (the caller says what it expected) or nothing specific is wrong.
pub fn diagnose(s: &str) -> Option<String> {
    let t = s.trim();
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let num = |i: &mut usize| -> Option<(u64, usize)> {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        let n = *i - start;
        (1..=18).contains(&n).then(|| (t[start..*i].parse().expect("digits"), n))
    };
    let sep = |i: &mut usize, c: u8| (b.get(*i) == Some(&c)).then(|| *i += 1);
    let (year, year_digits) = num(&mut i)?;
    sep(&mut i, b'-')?;
    let (month, _) = num(&mut i)?;
    sep(&mut i, b'-')?;
    let (day, _) = num(&mut i)?;
    if year_digits > 4 {
        return Some(format!("the year {year} has more than four digits (RFC 3339 years end at 9999)"));
    }
    if year == 0 {
        return Some("PostgreSQL has no year 0000 (1 BC is followed by 1 AD)".into());
    }
    if !(1..=12).contains(&month) {
        return Some(format!("there is no month {month}"));
    }
    let y = if b[0] == b'-' { -(year as i64) } else { year as i64 };
    let days = days_in_month(y, month as u32) as u64;
    if day == 0 || day > days {
        let leap = if month == 2 && day == 29 { format!(" ({year} is not a leap year)") } else { String::new() };
        return Some(format!("{year:04}-{month:02} has {days} days, not {day}{leap}"));
    }
    if i == b.len() || !matches!(b[i], b'T' | b't' | b' ') {
        return None;
    }
    i += 1;
    let (hour, _) = num(&mut i)?;
    sep(&mut i, b':')?;
    let (minute, _) = num(&mut i)?;
    let second = match sep(&mut i, b':') {
        Some(()) => num(&mut i)?.0,
        None => 0,
    };
    if hour > 24 || (hour == 24 && (minute, second) != (0, 0)) {
        return Some(format!(
            "there is no time {hour:02}:{minute:02}:{second:02} (24:00:00, the end of the day, is the only one in hour 24)"
        ));
    }
    if minute > 59 {
        return Some(format!("there is no minute {minute}"));
    }
    if second == 60 {
        return Some(
            "second 60 is a leap second, which PostgreSQL would store as the next minute's start: write \
             :59.999999 or the next minute"
                .into(),
        );
    }
    if second > 60 {
        return Some(format!("there is no second {second}"));
    }
    if sep(&mut i, b'.').or_else(|| sep(&mut i, b',')).is_some() {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    let zone = t[i..].trim_start();
    if zone.starts_with(|c: char| c.is_ascii_alphabetic())
        && !["z", "utc", "gmt"].iter().any(|z| zone.eq_ignore_ascii_case(z))
    {
        return Some(format!(
            "the zone name '{zone}' is not read: write an offset (+01:00), or the local time with --assume-tz ZONE"
        ));
    }
    if let Some(off) = zone.strip_prefix(['+', '-']) {
        if off.len() > 5 && off.as_bytes().get(5) == Some(&b':') {
            return Some(format!("the offset {zone} has seconds, which are not read"));
        }
        if off.get(..2).and_then(|h| h.parse::<u32>().ok()).is_some_and(|h| h > 15) {
            return Some(format!("the offset {zone} is beyond ±15:59"));
        }
    }
    None
}

/// `Z`, `±HH[[:]MM]`, ` UTC`, ` GMT`, or nothing: `Some(None)`; malformed: `None`.
fn parse_zone(p: &mut Cursor) -> Option<Option<i32>> {
    p.eat(b' ');
    if p.done() {
        return Some(None);
    }
    if p.eat(b'Z') || p.eat(b'z') {
        return Some(Some(0));
    }
    let rest = &p.b[p.i..];
    if rest.eq_ignore_ascii_case(b"UTC") || rest.eq_ignore_ascii_case(b"GMT") {
        p.i = p.b.len();
        return Some(Some(0));
    }
    let sign = if p.eat(b'+') {
        1
    } else if p.eat(b'-') {
        -1
    } else {
        return None;
    };
    let h = p.digits_exact(2)? as i32;
    // Minutes follow after a colon, directly (`+0530`), or not at all (`+05`).
    let m = if p.eat(b':') || !p.done() { p.digits_exact(2)? as i32 } else { 0 };
    if h > 15 || m > 59 {
        return None;
    }
    Some(Some(sign * (h * 3600 + m * 60)))
}

/// Parses a fixed offset such as `UTC`, `Z`, `+02:00`, `-0530` into seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("gmt") {
        return Some(0);
    }
    let mut p = Cursor { b: t.as_bytes(), i: 0 };
    let z = parse_zone(&mut p)?;
    if p.done() {
        z
    } else {
        None
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn digit(&mut self) -> Option<u8> {
        match self.b.get(self.i) {
            Some(c) if c.is_ascii_digit() => {
                self.i += 1;
                Some(c - b'0')
            }
            _ => None,
        }
    }
    fn digits_exact(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 10 + self.digit()? as u32;
        }
        Some(v)
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC, with the fraction only as
/// long as it needs to be (`2024-01-05T10:00:00Z`, `…:00.5Z`, `…:00.000001Z`).
pub fn format_rfc3339_micros(micros: i64) -> String {
    format_rfc3339_nanos(micros.div_euclid(1_000_000), (micros.rem_euclid(1_000_000) * 1000) as u32)
}

/// Formats seconds + nanoseconds since the Unix epoch as RFC 3339 UTC with up to 9
/// fraction digits (Firestore's precision), trailing zeros trimmed.
pub fn format_rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!("{}-{:02}-{:02}T{:02}:{:02}:{:02}", fmt_year(y), m, d, rem / 3600, rem / 60 % 60, rem % 60);
    if nanos != 0 {
        let f = format!("{nanos:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn fmt_year(y: i64) -> String {
    if y < 0 {
        format!("-{:04}", -y)
    } else {
        format!("{y:04}")
    }
}

/// Microseconds since the Unix epoch of "now".
pub fn now_micros() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    d.as_micros() as i64
}

// ---------------------------------------------------------------- intervals

/// The fields an `interval` column's type modifier names (PostgreSQL's `INTERVAL_MASK`):
/// `interval year` keeps only years, `interval hour to minute` only whole minutes.
pub const IV_MONTH: u32 = 1 << 1;
pub const IV_YEAR: u32 = 1 << 2;
pub const IV_DAY: u32 = 1 << 3;
pub const IV_HOUR: u32 = 1 << 10;
pub const IV_MINUTE: u32 = 1 << 11;
pub const IV_SECOND: u32 = 1 << 12;
/// No field restriction (`interval`, `interval(p)`).
pub const IV_FULL: u32 = 0x7FFF;

const US_PER_MONTH: i128 = 30 * MICROS_PER_DAY as i128;

/// An interval's text as PostgreSQL reads it (its `interval_in`, IntervalStyle `postgres`):
/// the months, days and microseconds it stores, and what it rounds on the way.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IntervalRead {
    pub months: i128,
    pub days: i128,
    pub micros: i128,
    /// A part is a fraction of a microsecond (`0.0000001 seconds`, `1.5 us`): rounded to
    /// microseconds (a half towards zero).
    pub sub_micro: bool,
    /// A fraction of a year (decade, century, millennium) that is no whole number of months
    /// (`0.1 years` is 1.2 months): PostgreSQL rounds it to whole months.
    pub fract_months: bool,
}

impl IntervalRead {
    /// Adds `n` (a decimal's digits `m` × 10^-`scale`) of a unit worth `per` units of `base`
    /// (months, or microseconds), the fraction spilling into days and microseconds as
    /// PostgreSQL's does (a month is 30 days).
    fn add(&mut self, m: i128, scale: u32, per: i128, months: bool) -> Option<()> {
        let div = 10i128.checked_pow(scale)?;
        let total = m.checked_mul(per)?;
        let (q, r) = (total / div, total % div);
        if months {
            // Years: whole months only, the rest rounded away.
            self.months += q + (2 * r.abs() >= div) as i128 * r.signum();
            self.fract_months |= r != 0;
            return Some(());
        }
        self.sub_micro |= r != 0;
        let q = q + (2 * r.abs() > div) as i128 * r.signum();
        if per >= US_PER_MONTH && per % US_PER_MONTH == 0 {
            self.months += q / US_PER_MONTH;
            let rest = q % US_PER_MONTH;
            self.days += rest / MICROS_PER_DAY as i128;
            self.micros += rest % MICROS_PER_DAY as i128;
        } else if per >= MICROS_PER_DAY as i128 {
            self.days += q / MICROS_PER_DAY as i128;
            self.micros += q % MICROS_PER_DAY as i128;
        } else {
            self.micros += q;
        }
        Some(())
    }
}

/// A unit word: (worth, counted in months?).
fn interval_unit(u: &str) -> Option<(i128, bool)> {
    const S: i128 = 1_000_000;
    Some(match u {
        "millennium" | "millennia" | "mil" | "mils" => (12_000, true),
        "century" | "centuries" | "cent" | "c" => (1_200, true),
        "decade" | "decades" | "dec" | "decs" => (120, true),
        "year" | "years" | "yr" | "yrs" | "y" => (12, true),
        "month" | "months" | "mon" | "mons" => (US_PER_MONTH, false),
        "week" | "weeks" | "w" => (7 * MICROS_PER_DAY as i128, false),
        "day" | "days" | "d" => (MICROS_PER_DAY as i128, false),
        "hour" | "hours" | "hr" | "hrs" | "h" => (3600 * S, false),
        "minute" | "minutes" | "min" | "mins" | "m" => (60 * S, false),
        "second" | "seconds" | "sec" | "secs" | "s" => (S, false),
        "millisecond" | "milliseconds" | "msec" | "msecs" | "msecond" | "mseconds" | "ms" => (1_000, false),
        "microsecond" | "microseconds" | "usec" | "usecs" | "usecond" | "useconds" | "us" => (1, false),
        _ => return None,
    })
}

/// `[+-]digits[.digits]` as (signed digits, scale), trailing fraction zeros dropped.
fn interval_number(t: &str) -> Option<(i128, u32)> {
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let frac = frac.trim_end_matches('0');
    if (int.is_empty() && frac.is_empty() && !body.contains('0'))
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
        || int.len() + frac.len() > 30
    {
        return None;
    }
    let digits: i128 = format!("0{int}{frac}").parse().ok()?;
    Some((if neg { -digits } else { digits }, frac.len() as u32))
}

/// The finest field a column's field mask keeps (PostgreSQL: the rightmost it names):
/// `year`, `month`, `day`, `hour` or `minute`; `None` for seconds or no restriction.
pub fn finest_field(range: u32) -> Option<&'static str> {
    Some(match range {
        r if r == IV_YEAR => "year",
        r if r == IV_MONTH || r == IV_YEAR | IV_MONTH => "month",
        r if r == IV_DAY => "day",
        r if r == IV_HOUR || r == IV_DAY | IV_HOUR => "hour",
        r if r == IV_MINUTE || r == IV_HOUR | IV_MINUTE || r == IV_DAY | IV_HOUR | IV_MINUTE => "minute",
        _ => return None,
    })
}

/// The unit a number without one has, by the column's fields.
fn bare_unit(range: u32) -> (i128, bool) {
    interval_unit(finest_field(range).unwrap_or("second")).expect("a unit")
}

/// Reads an interval's text as PostgreSQL does for the common forms: `1 day 2 hours`,
/// `@ 3 mins ago`, `1 12:00:00`, `-1-2` (years-months), `01:02:03.5`, ISO 8601 `P1Y2M3DT4H5M6S`;
/// `range` is the column's field mask ([`IV_FULL`] without one). `None`: a form not read here
/// (the server reads it as it reads it).
pub fn read_interval(s: &str, range: u32) -> Option<IntervalRead> {
    let s = s.trim().to_ascii_lowercase();
    let mut iv = IntervalRead::default();
    if let Some(iso) = s.strip_prefix('p') {
        let (date, time) = iso.split_once('t').unwrap_or((iso, ""));
        for (part, in_time) in [(date, false), (time, true)] {
            let mut rest = part;
            while !rest.is_empty() {
                let at = rest.find(|c: char| c.is_ascii_alphabetic())?;
                let (m, scale) = interval_number(&rest[..at])?;
                let unit = match (rest.as_bytes()[at], in_time) {
                    (b'y', false) => "year",
                    (b'm', false) => "month",
                    (b'w', false) => "week",
                    (b'd', false) => "day",
                    (b'h', true) => "hour",
                    (b'm', true) => "minute",
                    (b's', true) => "second",
                    _ => return None,
                };
                let (per, months) = interval_unit(unit)?;
                iv.add(m, scale, per, months)?;
                rest = &rest[at + 1..];
            }
        }
        return Some(iv);
    }
    let s = s.strip_prefix('@').unwrap_or(&s);
    let tokens: Vec<&str> = s.split_ascii_whitespace().collect();
    let mut negate = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        i += 1;
        if !t.is_ascii() {
            return None;
        }
        if t == "ago" && i == tokens.len() {
            negate = true;
        } else if t.contains(':') {
            // [+-]H:M[:S[.f]]; M:S.f, or M:S in a `minute to second` column.
            let (neg, body) = match t.as_bytes()[0] {
                b'-' => (true, &t[1..]),
                b'+' => (false, &t[1..]),
                _ => (false, t),
            };
            let parts: Vec<&str> = body.split(':').collect();
            let mins_secs = parts.len() == 2 && (parts[1].contains('.') || range == IV_MINUTE | IV_SECOND);
            let units: &[i128] = match (parts.len(), mins_secs) {
                (2, true) => &[60_000_000, 1_000_000],
                (2, false) => &[3_600_000_000, 60_000_000],
                (3, _) => &[3_600_000_000, 60_000_000, 1_000_000],
                _ => return None,
            };
            for (k, (p, per)) in parts.iter().zip(units).enumerate() {
                let (m, scale) = interval_number(p)?;
                if p.starts_with(['-', '+']) || (scale > 0 && k + 1 < parts.len()) {
                    return None;
                }
                iv.add(if neg { -m } else { m }, scale, *per, false)?;
            }
        } else if let Some((y, m)) = t[1..].split_once('-').map(|(y, m)| (&t[..y.len() + 1], m)) {
            // [+-]Y-M: years and months.
            let (years, ys) = interval_number(y)?;
            let (months, ms) = interval_number(m)?;
            if ys + ms > 0 || m.starts_with(['-', '+']) {
                return None;
            }
            iv.months += years * 12 + if years < 0 || y.starts_with('-') { -months } else { months };
        } else {
            // A number, its unit attached (`5min`) or the next token; a number without one
            // before a time is days (`1 12:00:00`), else the column's rightmost field.
            let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
            let (num, attached) = t.split_at(split);
            let (m, scale) = interval_number(num)?;
            let (per, months) = if !attached.is_empty() {
                interval_unit(attached)?
            } else if let Some(u) = tokens.get(i).and_then(|u| interval_unit(u)) {
                i += 1;
                u
            } else if tokens.get(i).is_some_and(|n| n.contains(':')) {
                interval_unit("day").expect("a unit")
            } else {
                bare_unit(range)
            };
            iv.add(m, scale, per, months)?;
        }
    }
    if negate {
        (iv.months, iv.days, iv.micros) = (-iv.months, -iv.days, -iv.micros);
    }
    Some(iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        parse_timestamp(s).unwrap_or_else(|| panic!("{s}")).utc_micros(0)
    }

    #[test]
    fn civil_round_trips() {
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn the_forms_users_have() {
        let base = 1_704_448_800_000_000; // 2024-01-05T10:00:00Z
        for s in [
            "2024-01-05T10:00:00Z",
            "2024-01-05 10:00:00",
            "2024-01-05T10:00",
            "2024-01-05T12:00:00+02:00",
            "2024-01-05T12:00:00+0200",
            "2024-01-05T12:00:00+02",
            "2024-01-05T05:30:00-04:30",
            "2024-01-05 10:00:00 UTC",
            "2024-01-05t10:00:00z",
            "  2024-01-05T10:00:00.000Z ",
        ] {
            assert_eq!(utc(s), base, "{s}");
        }
        assert_eq!(utc("2024-01-05T10:00:00.5Z"), base + 500_000);
        assert_eq!(utc("2024-01-05T10:00:00.123456Z"), base + 123_456);
        assert_eq!(utc("2024-01-05T10:00:00.1234565Z"), base + 123_457);
        assert!(parse_timestamp("2024-01-05T10:00:00.123456789Z").unwrap().rounded);
        assert_eq!(utc("1969-12-31T23:59:59.999999Z"), -1);
        assert_eq!(utc("2024-01-05"), base - 10 * 3_600_000_000);
        assert!(parse_timestamp("2024-01-05").unwrap().date_only);
        // Without a zone the caller's assumption applies.
        assert_eq!(parse_timestamp("2024-01-05 12:00:00").unwrap().utc_micros(7200), base);
        assert_eq!(utc("2024-02-29T00:00:00Z") + MICROS_PER_DAY, utc("2024-03-01T00:00:00Z"));
    }

    #[test]
    fn nonsense_is_refused() {
        for s in [
            "",
            "yesterday-ish",
            "2024-13-01",
            "2023-02-29",
            "2024-01-05T25:00:00",
            "2024-01-05T10:60",
            "2024-01-05T10:00:00+",
            "2024-01-05T10:00:00Zjunk",
            "2024-1-5",
            "1700000000",
            "2024-01-05T",
            "2024-01-05T10:00:00.Z",
        ] {
            assert!(parse_timestamp(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_rfc3339_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_rfc3339_micros(1_704_448_800_500_000), "2024-01-05T10:00:00.5Z");
        assert_eq!(format_rfc3339_nanos(-1, 999_999_999), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(format_rfc3339_nanos(1_704_448_800, 120_000_000), "2024-01-05T10:00:00.12Z");
        for s in ["2024-01-05T10:00:00.000001Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            assert_eq!(format_rfc3339_micros(utc(s)), s);
        }
    }

    #[test]
    fn zones_with_daylight_saving_time() {
        let athens = Zone::parse("Europe/Athens").unwrap();
        let local = |s: &str| parse_timestamp(s).unwrap().micros;
        let at = |s: &str| athens.to_utc(local(s)).map(format_rfc3339_micros);
        // Winter +02:00, summer +03:00 (EU rules: last Sunday of March and of October, 01:00 UTC).
        assert_eq!(at("2024-03-31 02:59:59").as_deref(), Some("2024-03-31T00:59:59Z"));
        assert_eq!(at("2024-03-31 04:00:00").as_deref(), Some("2024-03-31T01:00:00Z"));
        assert_eq!(at("2024-07-01 12:00:00").as_deref(), Some("2024-07-01T09:00:00Z"));
        // 03:30 does not exist that night: the offset before the change (+02:00), as PostgreSQL does.
        assert_eq!(at("2024-03-31 03:30:00").as_deref(), Some("2024-03-31T01:30:00Z"));
        // 03:30 happens twice in October: the offset after the change (+02:00), as PostgreSQL does.
        assert_eq!(at("2024-10-27 03:30:00").as_deref(), Some("2024-10-27T01:30:00Z"));
        assert_eq!(at("2024-10-27 02:59:00").as_deref(), Some("2024-10-26T23:59:00Z"));
        // Fixed offsets and names.
        assert_eq!(Zone::parse("+05:30").unwrap(), Zone::Fixed(19800));
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("-04:30").unwrap().name(), "-04:30");
        assert_eq!(athens.name(), "Europe/Athens");
        assert!(Zone::parse("Europe/Atlantis").unwrap_err().contains("'Europe/Atlantis'"));
        // A written offset wins over the zone.
        let p = parse_timestamp("2024-07-01 12:00:00+00:00").unwrap();
        assert_eq!(p.utc_micros_in(&athens), Some(local("2024-07-01 12:00:00")));
        // Beyond the years the rules cover: None, never a wrong answer.
        assert_eq!(athens.to_utc(local("9999-12-31 23:00:00") + 2 * 3_600_000_000), None);
    }

    #[test]
    fn what_is_wrong_is_said() {
        for (s, why) in [
            ("2024-12-31T23:59:60Z", "leap second"),
            ("0000-01-01", "no year 0000"),
            ("10000-01-01T00:00:00Z", "more than four digits"),
            ("2023-02-29", "2023-02 has 28 days, not 29 (2023 is not a leap year)"),
            ("2024-04-31 10:00", "has 30 days, not 31"),
            ("2024-13-01", "no month 13"),
            ("2024-01-05T24:00:01", "no time 24:00:01"),
            ("2024-01-05T25:00", "no time 25:00:00"),
            ("2024-01-05T10:61", "no minute 61"),
            ("2024-01-05 10:00:00 Europe/Paris", "the zone name 'Europe/Paris' is not read"),
            ("2024-01-05T10:00:00.5 PST", "the zone name 'PST'"),
            ("2024-01-05T10:00:00+16:00", "beyond ±15:59"),
            ("2024-01-05T10:00:00+05:30:15", "has seconds"),
        ] {
            let got = diagnose(s).unwrap_or_else(|| panic!("{s}: no diagnosis"));
            assert!(got.contains(why), "{s}: {got}");
        }
        for s in ["yesterday", "2024-01-05", "2024-01-05T10:00:00Z", "1700000000", "10:00"] {
            assert_eq!(diagnose(s), None, "{s}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("UTC"), Some(0));
        assert_eq!(parse_offset("+02:00"), Some(7200));
        assert_eq!(parse_offset("-0530"), Some(-19800));
        assert_eq!(parse_offset("Europe/Athens"), None);
    }

    #[test]
    fn intervals_read_as_postgresql_reads_them() {
        let r = |s: &str| read_interval(s, IV_FULL).unwrap_or_else(|| panic!("{s}"));
        let at = |s: &str| {
            let i = r(s);
            (i.months, i.days, i.micros)
        };
        assert_eq!(at("1 year 2 mons 3 days 04:05:06.5"), (14, 3, 14_706_500_000));
        assert_eq!(at("@ 3 mins ago"), (0, 0, -180_000_000));
        assert_eq!(at("1-2"), (14, 0, 0));
        assert_eq!(at("-1-2"), (-14, 0, 0));
        assert_eq!(at("1 12:00:00"), (0, 1, 43_200_000_000));
        assert_eq!(at("P1Y2M3DT4H5M6S"), (14, 3, 14_706_000_000));
        assert_eq!(at("0.5 months"), (0, 15, 0));
        assert_eq!(at("1.5 weeks"), (0, 10, 43_200_000_000));
        assert_eq!(at("5min"), (0, 0, 300_000_000));
        assert_eq!(at("5"), (0, 0, 5_000_000));
        assert_eq!(read_interval("5", IV_HOUR).map(|i| i.micros), Some(3_600_000_000 * 5));
        assert_eq!(read_interval("1:30", IV_MINUTE | IV_SECOND).map(|i| i.micros), Some(90_000_000));
        assert_eq!(at("1:30.5"), (0, 0, 90_500_000));
        for (s, sub, months) in [
            ("0.0000001 seconds", true, false),
            ("1.5 us", true, false),
            ("1.2345678 ms", true, false),
            ("1.234567 s", false, false),
            ("0.1 years", false, true),
            ("0.5 years", false, false),
            ("0.01 months", false, false),
            ("1 mon 0.00000000001 days", true, false),
        ] {
            assert_eq!((r(s).sub_micro, r(s).fract_months), (sub, months), "{s}");
        }
        for odd in ["P0001-02-03T04:05:06", "1 fortnight", "yesterday", "1 day, 2 hours", "1 jour"] {
            assert_eq!(read_interval(odd, IV_FULL), None, "{odd}");
        }
    }
}
