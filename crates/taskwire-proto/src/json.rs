//! JSON members a message does not know.
//!
//! Receivers ignore body members their schema does not define (`docs/protocol.md` §10),
//! but they still check them as JSON (§3): valid UTF-8, no lone surrogate escape, nesting
//! within the limit, numbers a 64-bit float can hold. serde's `IgnoredAny` skips a value
//! without those checks (serde_json only scans for its end), so the generated
//! deserializers skip unknown members with [`UnknownValue`] instead, which reads the value
//! through the same checks as a known one and keeps nothing.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value read in full, checked, and discarded. Costs no memory beyond the
/// parser's own (serde_json's nesting limit bounds the recursion).
///
/// ```
/// use taskwire_proto::json::UnknownValue;
///
/// assert!(serde_json::from_str::<UnknownValue>(r#"{"a":[1,"b",{"c":null}]}"#).is_ok());
/// // A lone surrogate escape, which serde's IgnoredAny lets through.
/// assert!(serde_json::from_str::<UnknownValue>(r#"{"a":"\ud800"}"#).is_err());
/// assert!(serde_json::from_str::<serde::de::IgnoredAny>(r#"{"a":"\ud800"}"#).is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnknownValue;

impl<'de> Deserialize<'de> for UnknownValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UnknownValue, D::Error> {
        deserializer.deserialize_any(UnknownValue)
    }
}

impl<'de> Visitor<'de> for UnknownValue {
    type Value = UnknownValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_unit<E: de::Error>(self) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_none<E: de::Error>(self) -> Result<UnknownValue, E> {
        Ok(UnknownValue)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UnknownValue, A::Error> {
        while seq.next_element::<UnknownValue>()?.is_some() {}
        Ok(UnknownValue)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnknownValue, A::Error> {
        while map.next_entry::<UnknownValue, UnknownValue>()?.is_some() {}
        Ok(UnknownValue)
    }
}

#[cfg(test)]
mod tests {
    use super::UnknownValue;

    fn check(text: &[u8]) -> Result<UnknownValue, serde_json::Error> {
        serde_json::from_slice(text)
    }

    #[test]
    fn well_formed_values_of_every_kind_pass() {
        for text in [
            &br#"{"a":{"b":[true,false,null,-1,18446744073709551615,1.5e300,"\ud83d\ude00"]}}"#[..],
            b"[]",
            b"\"\"",
            b"0",
        ] {
            assert!(check(text).is_ok(), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn what_ignored_any_lets_through_is_refused() {
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        for text in [
            &b"{\"a\":\"\xff\"}"[..],
            br#"{"a":"\udc00"}"#,
            br#"{"\ud800":1}"#,
            deep.as_bytes(),
            b"[1e400]",
        ] {
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok(),
                "IgnoredAny accepts {}",
                String::from_utf8_lossy(text)
            );
            let error = check(text).unwrap_err();
            assert_eq!(
                error.classify(),
                serde_json::error::Category::Syntax,
                "{}: {error}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
