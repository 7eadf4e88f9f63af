//! The well-known types taskwire's schemas use, with the canonical proto3 JSON mapping,
//! its ranges, and deterministic encodings.
//!
//! [`Timestamp`] and [`Duration`]:
//! pbjson-types renders timestamps with a `+00:00` offset and accepts any chrono date;
//! the proto3 JSON mapping requires `Z`-normalised RFC 3339 within years 1..=9999 and
//! durations within ±315,576,000,000 s, with 0, 3, 6 or 9 fractional digits. These types
//! keep the same protobuf encoding and enforce the mapping both ways, so an out-of-range
//! value from a peer is a clear error rather than a silently different value.
//!
//! [`Struct`], [`Value`] and [`ListValue`]: JSON values, with object members ordered by
//! key so that encoding the same value twice gives the same bytes.
//!
//! ```
//! use taskwire_proto::wkt::{Duration, Timestamp};
//!
//! let t = Timestamp { seconds: 1_700_000_000, nanos: 5_000_000 };
//! assert_eq!(serde_json::to_string(&t).unwrap(), r#""2023-11-14T22:13:20.005Z""#);
//! let d: Duration = serde_json::from_str(r#""-1.5s""#).unwrap();
//! assert_eq!((d.seconds, d.nanos), (-1, -500_000_000));
//! ```

use std::fmt::{self, Write as _};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: seconds and nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch; -62,135,596,800 (year 1) to 253,402,300,799 (year 9999).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past `seconds`, 0 to 999,999,999 (never negative).
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// A signed span of time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Duration {
    /// Whole seconds, -315,576,000,000 to 315,576,000,000 (about ±10,000 years).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds, -999,999,999 to 999,999,999, with the sign of `seconds` when both are
    /// non-zero.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The first second of year 1.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// The last second of year 9999.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// The largest magnitude of a duration's seconds.
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

impl Timestamp {
    /// Whether the value is inside the proto3 range.
    pub fn is_valid(&self) -> bool {
        (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&self.seconds)
            && (0..1_000_000_000).contains(&self.nanos)
    }

    /// The current time.
    pub fn now() -> Timestamp {
        std::time::SystemTime::now().into()
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(time: std::time::SystemTime) -> Timestamp {
        let (seconds, nanos) = match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => (after.as_secs() as i64, after.subsec_nanos() as i32),
            Err(before) => {
                let before = before.duration();
                let (s, n) = (before.as_secs() as i64, before.subsec_nanos() as i32);
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        };
        Timestamp { seconds, nanos }
    }
}

impl TryFrom<Timestamp> for std::time::SystemTime {
    type Error = OutOfRange;

    fn try_from(t: Timestamp) -> Result<Self, OutOfRange> {
        if !t.is_valid() {
            return Err(OutOfRange("timestamp"));
        }
        let epoch = std::time::UNIX_EPOCH;
        let nanos = std::time::Duration::from_nanos(t.nanos as u64);
        Ok(if t.seconds >= 0 {
            epoch + std::time::Duration::from_secs(t.seconds as u64) + nanos
        } else {
            epoch - std::time::Duration::from_secs(t.seconds.unsigned_abs()) + nanos
        })
    }
}

impl Duration {
    /// Whether the value is inside the proto3 range with consistent signs.
    pub fn is_valid(&self) -> bool {
        (-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&self.seconds)
            && (-999_999_999..=999_999_999).contains(&self.nanos)
            && !(self.seconds > 0 && self.nanos < 0)
            && !(self.seconds < 0 && self.nanos > 0)
    }
}

impl From<std::time::Duration> for Duration {
    /// Saturates at the proto3 maximum.
    fn from(d: std::time::Duration) -> Duration {
        let seconds = i64::try_from(d.as_secs())
            .unwrap_or(i64::MAX)
            .min(MAX_DURATION_SECONDS);
        Duration {
            seconds,
            nanos: d.subsec_nanos() as i32,
        }
    }
}

impl TryFrom<Duration> for std::time::Duration {
    type Error = OutOfRange;

    /// Fails for negative or out-of-range durations.
    fn try_from(d: Duration) -> Result<Self, OutOfRange> {
        if !d.is_valid() || d.seconds < 0 || d.nanos < 0 {
            return Err(OutOfRange("non-negative duration"));
        }
        Ok(std::time::Duration::new(d.seconds as u64, d.nanos as u32))
    }
}

/// A value outside the range its type allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange(&'static str);

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value outside the range of a {}", self.0)
    }
}

impl std::error::Error for OutOfRange {}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `.fff`, `.ffffff` or `.fffffffff` (the shortest exact form) for `nanos` > 0.
fn push_fraction(out: &mut String, nanos: u32) {
    if nanos == 0 {
        return;
    }
    if nanos.is_multiple_of(1_000_000) {
        let _ = write!(out, ".{:03}", nanos / 1_000_000);
    } else if nanos.is_multiple_of(1_000) {
        let _ = write!(out, ".{:06}", nanos / 1_000);
    } else {
        let _ = write!(out, ".{nanos:09}");
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with `Z`, as the proto3 JSON mapping writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.seconds.div_euclid(86_400);
        let secs = self.seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut out = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        push_fraction(&mut out, self.nanos.unsigned_abs());
        out.push('Z');
        f.write_str(&out)
    }
}

impl fmt::Display for Duration {
    /// Seconds with an `s` suffix, as the proto3 JSON mapping writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.seconds < 0 || self.nanos < 0 {
            out.push('-');
        }
        let _ = write!(out, "{}", self.seconds.unsigned_abs());
        push_fraction(&mut out, self.nanos.unsigned_abs());
        out.push('s');
        f.write_str(&out)
    }
}

/// Parses `digits` exactly, all ASCII digits.
fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a fraction of 1 to 9 digits after the dot into nanoseconds.
fn fraction(text: &str) -> Option<i32> {
    let digits = u32::try_from(text.len())
        .ok()
        .filter(|n| (1..=9).contains(n))?;
    let value = number(text)? * 10_i64.pow(9 - digits);
    i32::try_from(value).ok()
}

impl std::str::FromStr for Timestamp {
    type Err = String;

    /// RFC 3339 with `Z` or a numeric offset, within years 1..=9999 once in UTC.
    fn from_str(text: &str) -> Result<Timestamp, String> {
        let invalid = || format!("invalid RFC 3339 timestamp {text:?}");
        let bytes = text.as_bytes();
        if bytes.len() < 20
            || bytes[4] != b'-'
            || bytes[7] != b'-'
            || !matches!(bytes[10], b'T' | b't')
            || bytes[13] != b':'
            || bytes[16] != b':'
        {
            return Err(invalid());
        }
        let field =
            |range: std::ops::Range<usize>| text.get(range).and_then(number).ok_or_else(invalid);
        let (year, month, day) = (field(0..4)?, field(5..7)?, field(8..10)?);
        let (hour, minute, second) = (field(11..13)?, field(14..16)?, field(17..19)?);
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            _ => return Err(invalid()),
        };
        if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
            return Err(invalid());
        }
        let mut rest = &text[19..];
        let mut nanos = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            nanos = fraction(&after_dot[..digits]).ok_or_else(invalid)?;
            rest = &after_dot[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return Err(invalid()),
                };
                let (h, m) = (
                    number(&rest[1..3]).ok_or_else(invalid)?,
                    number(&rest[4..6]).ok_or_else(invalid)?,
                );
                if h > 23 || m > 59 {
                    return Err(invalid());
                }
                sign * (h * 3600 + m * 60)
            }
            _ => return Err(invalid()),
        };
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
                - offset;
        let timestamp = Timestamp { seconds, nanos };
        if !timestamp.is_valid() {
            return Err(format!(
                "timestamp {text:?} is outside 0001-01-01T00:00:00Z..=9999-12-31T23:59:59.999999999Z"
            ));
        }
        Ok(timestamp)
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    /// `[-]seconds[.fraction]s`, within ±315,576,000,000 s.
    fn from_str(text: &str) -> Result<Duration, String> {
        let invalid = || {
            format!("invalid duration {text:?}: expected seconds with an `s` suffix, like \"1.5s\"")
        };
        let body = text.strip_suffix('s').ok_or_else(invalid)?;
        let (negative, body) = match body.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, body),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((whole, frac)) => (whole, Some(frac)),
            None => (body, None),
        };
        let seconds = number(whole).ok_or_else(invalid)?;
        let nanos = match frac {
            Some(frac) => fraction(frac).ok_or_else(invalid)?,
            None => 0,
        };
        let (seconds, nanos) = if negative {
            (-seconds, -nanos)
        } else {
            (seconds, nanos)
        };
        let duration = Duration { seconds, nanos };
        if !duration.is_valid() {
            return Err(format!("duration {text:?} is outside ±315576000000s"));
        }
        Ok(duration)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_valid() {
            return Err(serde::ser::Error::custom(format_args!(
                "timestamp {{seconds: {}, nanos: {}}} is outside the proto3 JSON range",
                self.seconds, self.nanos
            )));
        }
        serializer.collect_str(self)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_valid() {
            return Err(serde::ser::Error::custom(format_args!(
                "duration {{seconds: {}, nanos: {}}} is outside the proto3 JSON range",
                self.seconds, self.nanos
            )));
        }
        serializer.collect_str(self)
    }
}

struct ParseVisitor<T>(std::marker::PhantomData<T>, &'static str);

impl<T: std::str::FromStr<Err = String>> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        deserializer.deserialize_str(ParseVisitor(
            std::marker::PhantomData,
            "an RFC 3339 timestamp string",
        ))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(ParseVisitor(
            std::marker::PhantomData,
            "a duration string like \"1.5s\"",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_in_utc_with_z_and_shortest_fraction() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_700_000_000, 5_000_000, "2023-11-14T22:13:20.005Z"),
            (1_700_000_000, 5_000, "2023-11-14T22:13:20.000005Z"),
            (1_700_000_000, 5, "2023-11-14T22:13:20.000000005Z"),
            (MIN_TIMESTAMP_SECONDS, 0, "0001-01-01T00:00:00Z"),
            (
                MAX_TIMESTAMP_SECONDS,
                999_999_999,
                "9999-12-31T23:59:59.999999999Z",
            ),
            (-1, 0, "1969-12-31T23:59:59Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
        ];
        for (seconds, nanos, text) in cases {
            let t = Timestamp { seconds, nanos };
            assert_eq!(t.to_string(), text);
            assert_eq!(text.parse::<Timestamp>(), Ok(t), "{text}");
        }
    }

    #[test]
    fn timestamps_with_offsets_normalise_to_utc() {
        let t: Timestamp = "2023-11-15T00:13:20.5+02:00".parse().unwrap();
        assert_eq!(
            t,
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn out_of_range_and_malformed_timestamps_are_refused() {
        for text in [
            "10000-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.1234567890Z",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "+2023-11-14T22:13:20Z",
        ] {
            assert!(text.parse::<Timestamp>().is_err(), "{text} accepted");
        }
        for t in [
            Timestamp {
                seconds: MAX_TIMESTAMP_SECONDS + 1,
                nanos: 0,
            },
            Timestamp {
                seconds: 0,
                nanos: -1,
            },
        ] {
            assert!(serde_json::to_string(&t).is_err(), "{t:?} serialized");
        }
    }

    #[test]
    fn durations_round_trip_and_respect_range_and_sign() {
        for (seconds, nanos, text) in [
            (0, 0, "0s"),
            (1, 500_000_000, "1.500s"),
            (-1, -500_000_000, "-1.500s"),
            (0, -1_000, "-0.000001s"),
            (MAX_DURATION_SECONDS, 0, "315576000000s"),
        ] {
            let d = Duration { seconds, nanos };
            assert_eq!(d.to_string(), text);
            assert_eq!(text.parse::<Duration>(), Ok(d), "{text}");
        }
        for text in [
            "315576000001s",
            "1",
            "1.s",
            "1.0000000001s",
            "--1s",
            "1e3s",
            " 1s",
        ] {
            assert!(text.parse::<Duration>().is_err(), "{text} accepted");
        }
        assert!(
            serde_json::to_string(&Duration {
                seconds: 1,
                nanos: -1
            })
            .is_err()
        );
    }

    #[test]
    fn system_time_conversions_round_trip() {
        let now = std::time::SystemTime::now();
        let t = Timestamp::from(now);
        assert_eq!(std::time::SystemTime::try_from(t), Ok(now));
        let before_epoch = std::time::UNIX_EPOCH - std::time::Duration::from_millis(1500);
        let t = Timestamp::from(before_epoch);
        assert_eq!((t.seconds, t.nanos), (-2, 500_000_000));
        assert_eq!(std::time::SystemTime::try_from(t), Ok(before_epoch));
    }
}

/// `google.protobuf.Struct`: a JSON object. Its fields are ordered by key, so its
/// protobuf encoding is deterministic (pbjson-types uses a hash map, whose order varies
/// from one encoding to the next).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    /// The object's members.
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: std::collections::BTreeMap<String, Value>,
}

/// `google.protobuf.Value`: any JSON value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// Which kind of value; `None` is written as JSON `null`.
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<value::Kind>,
}

/// `google.protobuf.ListValue`: a JSON array.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    /// The array's elements.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// `google.protobuf.NullValue`: JSON `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NullValue {
    /// The only value.
    NullValue = 0,
}

/// The kinds of [`Value`].
pub mod value {
    /// One JSON value.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// `null`.
        #[prost(enumeration = "super::NullValue", tag = "1")]
        NullValue(i32),
        /// A number; JSON has no NaN or infinity, so those have no JSON form.
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// A string.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// `true` or `false`.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        /// An object.
        #[prost(message, tag = "5")]
        StructValue(super::Struct),
        /// An array.
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

impl Serialize for Struct {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(&self.fields)
    }
}

impl Serialize for ListValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.values)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use value::Kind;
        match &self.kind {
            None | Some(Kind::NullValue(_)) => serializer.serialize_unit(),
            Some(Kind::NumberValue(n)) if !n.is_finite() => Err(serde::ser::Error::custom(
                format_args!("google.protobuf.Value number {n} has no JSON form"),
            )),
            Some(Kind::NumberValue(n)) => serializer.serialize_f64(*n),
            Some(Kind::StringValue(s)) => serializer.serialize_str(s),
            Some(Kind::BoolValue(b)) => serializer.serialize_bool(*b),
            Some(Kind::StructValue(s)) => s.serialize(serializer),
            Some(Kind::ListValue(l)) => l.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value {
                    kind: Some(value::Kind::NullValue(0)),
                })
            }

            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                self.visit_unit()
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
                Ok(Value {
                    kind: Some(value::Kind::BoolValue(b)),
                })
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
                Ok(Value {
                    kind: Some(value::Kind::NumberValue(n)),
                })
            }

            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
                self.visit_f64(n as f64)
            }

            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
                self.visit_f64(n as f64)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value {
                    kind: Some(value::Kind::StringValue(s.to_owned())),
                })
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value {
                    kind: Some(value::Kind::StringValue(s)),
                })
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element()? {
                    values.push(value);
                }
                Ok(Value {
                    kind: Some(value::Kind::ListValue(ListValue { values })),
                })
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
                let fields = StructVisitor.visit_map(map)?;
                Ok(Value {
                    kind: Some(value::Kind::StructValue(fields)),
                })
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct StructVisitor;

impl<'de> Visitor<'de> for StructVisitor {
    type Value = Struct;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Struct, A::Error> {
        let mut fields = std::collections::BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            if fields.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key in google.protobuf.Struct"));
            }
        }
        Ok(Struct { fields })
    }
}

impl<'de> Deserialize<'de> for Struct {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Struct, D::Error> {
        deserializer.deserialize_map(StructVisitor)
    }
}

impl<'de> Deserialize<'de> for ListValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ListValue, D::Error> {
        match Value::deserialize(deserializer)?.kind {
            Some(value::Kind::ListValue(list)) => Ok(list),
            _ => Err(de::Error::custom(
                "expected a JSON array for google.protobuf.ListValue",
            )),
        }
    }
}

#[cfg(test)]
mod struct_tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn struct_encoding_is_deterministic_and_json_shaped() {
        let json = r#"{"b":[1.0,"x",null,true],"a":{"nested":2.5}}"#;
        let value: Struct = serde_json::from_str(json).unwrap();
        let first = value.encode_to_vec();
        let again: Struct = serde_json::from_str(json).unwrap();
        assert_eq!(again.encode_to_vec(), first);
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":{"nested":2.5},"b":[1.0,"x",null,true]}"#
        );
        assert_eq!(Struct::decode(first.as_slice()).unwrap(), value);
    }

    #[test]
    fn duplicate_keys_and_non_finite_numbers_are_refused() {
        assert!(serde_json::from_str::<Struct>(r#"{"a":1,"a":2}"#).is_err());
        let nan = Value {
            kind: Some(value::Kind::NumberValue(f64::NAN)),
        };
        assert!(serde_json::to_string(&nan).is_err());
    }
}
