//! Bucket assignment: the directory under the sink's base path that a record's part file goes to,
//! as Flink's `BucketAssigner`s choose it.

use std::sync::Arc;

use weir_core::{Error, Result};

/// A user's bucket choice: a record and its timestamp to a relative path.
pub type BucketFn<T> = Arc<dyn Fn(&T, Option<i64>) -> String + Send + Sync>;

/// How a record's bucket (its sub-directory of the base path) is chosen.
pub enum Buckets<T> {
    /// One directory per period of processing time, named by a date-time pattern (Flink's
    /// `DateTimeBucketAssigner`, whose default pattern is `yyyy-MM-dd--HH`).
    ProcessingTime(DatePattern),
    /// One directory per period of the records' event time (their timestamps), named by a
    /// date-time pattern.
    EventTime(DatePattern),
    /// No sub-directories: every part file goes straight under the base path (Flink's
    /// `BasePathBucketAssigner`).
    None,
    /// A user's choice: the bucket of a record and its timestamp (`None` on a stream without event
    /// time). The returned string is a relative path (`/` separates directories).
    Custom(BucketFn<T>),
}

impl<T> Clone for Buckets<T> {
    fn clone(&self) -> Self {
        match self {
            Buckets::ProcessingTime(p) => Buckets::ProcessingTime(p.clone()),
            Buckets::EventTime(p) => Buckets::EventTime(p.clone()),
            Buckets::None => Buckets::None,
            Buckets::Custom(f) => Buckets::Custom(f.clone()),
        }
    }
}

impl<T> std::fmt::Debug for Buckets<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Buckets::ProcessingTime(p) => write!(f, "processing time '{}'", p.pattern),
            Buckets::EventTime(p) => write!(f, "event time '{}'", p.pattern),
            Buckets::None => f.write_str("none"),
            Buckets::Custom(_) => f.write_str("custom"),
        }
    }
}

impl<T> Buckets<T> {
    /// Buckets per period of processing time named by `pattern` (Java `DateTimeFormatter` letters
    /// `yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`; text in single quotes; UTC).
    pub fn processing_time(pattern: &str) -> Result<Self> {
        Ok(Buckets::ProcessingTime(DatePattern::parse(pattern)?))
    }

    /// Buckets per period of the records' event time, named by `pattern` (as
    /// [`Buckets::processing_time`]).
    pub fn event_time(pattern: &str) -> Result<Self> {
        Ok(Buckets::EventTime(DatePattern::parse(pattern)?))
    }

    /// Buckets chosen by `f` from a record and its timestamp.
    pub fn custom(f: impl Fn(&T, Option<i64>) -> String + Send + Sync + 'static) -> Self {
        Buckets::Custom(Arc::new(f))
    }
}

impl<T> Default for Buckets<T> {
    /// Flink's default: hourly buckets of processing time, `yyyy-MM-dd--HH`.
    fn default() -> Self {
        Buckets::ProcessingTime(DatePattern::flink_default())
    }
}

/// One piece of a date-time pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A field and the digits it is written with (at least).
    Year(usize),
    Month(usize),
    Day(usize),
    Hour(usize),
    Minute(usize),
    Second(usize),
}

/// A date-time pattern with the letters of Java's `DateTimeFormatter` that bucket names use,
/// formatted in UTC.
#[derive(Clone, Debug)]
pub struct DatePattern {
    pattern: String,
    pieces: Vec<Piece>,
    /// The length of the shortest period the pattern tells apart (ms): every instant in one such
    /// period (counted from the epoch) formats the same.
    period: i64,
}

impl DatePattern {
    /// Flink's `DateTimeBucketAssigner` default, `yyyy-MM-dd--HH`.
    pub fn flink_default() -> Self {
        let pieces = vec![
            Piece::Year(4),
            Piece::Text("-".into()),
            Piece::Month(2),
            Piece::Text("-".into()),
            Piece::Day(2),
            Piece::Text("--".into()),
            Piece::Hour(2),
        ];
        DatePattern { pattern: "yyyy-MM-dd--HH".into(), pieces, period: 3_600_000 }
    }

    /// Parses `pattern`; an error names a letter it does not know.
    pub fn parse(pattern: &str) -> Result<Self> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut pieces = Vec::new();
        let mut period = 86_400_000;
        let mut i = 0;
        let mut text = String::new();
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // Quoted text; '' is a quote.
                let mut j = i + 1;
                if chars.get(j) == Some(&'\'') {
                    text.push('\'');
                    i = j + 1;
                    continue;
                }
                while j < chars.len() {
                    if chars[j] == '\'' {
                        if chars.get(j + 1) != Some(&'\'') {
                            break;
                        }
                        j += 1;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                if j == chars.len() {
                    return Err(Error::Config(format!(
                        "bucket pattern '{pattern}' opens a quote it does not close; close it with '"
                    )));
                }
                i = j + 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                text.push(c);
                i += 1;
                continue;
            }
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            let piece = match c {
                'y' | 'u' => Piece::Year(if n == 2 { 2 } else { n }),
                'M' => Piece::Month(n),
                'd' => Piece::Day(n),
                'H' => Piece::Hour(n),
                'm' => Piece::Minute(n),
                's' => Piece::Second(n),
                other => {
                    return Err(Error::Config(format!(
                        "bucket pattern '{pattern}' uses the letter '{other}', which weir does not format; use \
                         y (year), M (month), d (day), H (hour), m (minute), s (second), or quote text as 'text'"
                    )));
                }
            };
            period = period.min(match piece {
                Piece::Hour(_) => 3_600_000,
                Piece::Minute(_) => 60_000,
                Piece::Second(_) => 1_000,
                _ => 86_400_000,
            });
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
            i += n;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(DatePattern { pattern: pattern.to_string(), pieces, period })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// `millis` (since the epoch, UTC) formatted.
    pub fn format(&self, millis: i64) -> String {
        let secs = millis.div_euclid(1000);
        let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, mo, d) = civil_from_days(days);
        let mut out = String::with_capacity(self.pattern.len() + 4);
        for p in &self.pieces {
            let (v, width) = match p {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Year(2) => (y.rem_euclid(100), 2),
                Piece::Year(w) => (y, *w),
                Piece::Month(w) => (i64::from(mo), *w),
                Piece::Day(w) => (i64::from(d), *w),
                Piece::Hour(w) => (in_day / 3600, *w),
                Piece::Minute(w) => (in_day / 60 % 60, *w),
                Piece::Second(w) => (in_day % 60, *w),
            };
            use std::fmt::Write;
            let _ = write!(out, "{v:0width$}");
        }
        out
    }

    /// The period `millis` falls in: instants of one period format the same.
    pub(crate) fn period_of(&self, millis: i64) -> i64 {
        millis.div_euclid(self.period)
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_format_as_java_does() -> Result<()> {
        // 2026-12-08T02:05:46.123Z
        let t = 1_796_695_546_123;
        assert_eq!(DatePattern::flink_default().format(t), "2026-12-08--02");
        assert_eq!(DatePattern::parse("yyyy-MM-dd--HH")?.format(t), "2026-12-08--02");
        assert_eq!(DatePattern::parse("'dt='yyyy-MM-dd/'hour='HH")?.format(t), "dt=2026-12-08/hour=02");
        assert_eq!(DatePattern::parse("yy/M/d H:mm:ss")?.format(t), "26/12/8 2:05:46");
        assert_eq!(DatePattern::parse("'it''s' yyyy")?.format(t), "it's 2026");
        assert_eq!(DatePattern::parse("yyyy-MM-dd")?.format(0), "1970-01-01");
        assert_eq!(DatePattern::parse("yyyy-MM-dd HH")?.format(-1), "1969-12-31 23");
        assert_eq!(DatePattern::parse("yyyy-MM-dd")?.format(951_782_400_000), "2000-02-29");
        Ok(())
    }

    #[test]
    fn one_period_formats_the_same() -> Result<()> {
        let p = DatePattern::parse("yyyy-MM-dd--HH")?;
        let t = 1_796_695_546_123;
        let start = p.period_of(t) * 3_600_000;
        assert_eq!(p.format(start), p.format(start + 3_599_999));
        assert_ne!(p.format(start), p.format(start + 3_600_000));
        assert_eq!(DatePattern::parse("yyyy-MM")?.period, 86_400_000);
        assert_eq!(DatePattern::parse("HH:mm")?.period, 60_000);
        Ok(())
    }

    #[test]
    fn unknown_letters_and_open_quotes_are_clear_errors() {
        let e = DatePattern::parse("yyyy-MM-dd EEE").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'E'") && e.contains("y (year)"), "{e}");
        let e = DatePattern::parse("'dt=yyyy").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("does not close"), "{e}");
    }
}
