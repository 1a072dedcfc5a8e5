//! Payload bytes in JSON, one rule for every place rumor shows them (`rumor monitor --format
//! json`, the control API's events and query answers): a JSON string when they are UTF-8 text,
//! else `{"base64": "..."}`. Reading also accepts an array of byte values, the form before
//! base64. Binary formats (postcard) keep plain bytes.
//!
//! Use with `#[serde(with = "rumor_handlers::payload_json")]` on a `Vec<u8>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The key of the object that carries bytes which are not UTF-8.
const BASE64_KEY: &str = "base64";

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return bytes.serialize(s);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(BASE64_KEY, &STANDARD.encode(bytes))?;
            map.end()
        }
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    if !d.is_human_readable() {
        return Vec::<u8>::deserialize(d);
    }
    d.deserialize_any(PayloadVisitor)
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a string, {"base64": "..."} or an array of byte values (0-255)"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
        Ok(Vec::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<Vec<u8>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The hint comes from the sender: bounded, so a lying one cannot reserve memory.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(bytes)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != BASE64_KEY || bytes.is_some() {
                return Err(de::Error::custom(format!(
                    r#"a payload object has exactly one key, "{BASE64_KEY}"; found "{key}""#
                )));
            }
            let text = map.next_value::<String>()?;
            bytes = Some(STANDARD.decode(text.as_bytes()).map_err(|e| {
                de::Error::custom(format!("the payload's {BASE64_KEY} is not base64: {e}"))
            })?);
        }
        bytes.ok_or_else(|| de::Error::custom(format!(r#"a payload object needs "{BASE64_KEY}""#)))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Carrier(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn text_reads_as_text_and_other_bytes_as_base64() {
        let text = serde_json::to_string(&Carrier(b"web v42".to_vec())).unwrap();
        assert_eq!(text, r#""web v42""#);
        let binary = serde_json::to_string(&Carrier(vec![0xff, 0])).unwrap();
        assert_eq!(binary, r#"{"base64":"/wA="}"#);
        for json in [text, binary] {
            let back: Carrier = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }

    #[test]
    fn byte_arrays_and_null_are_still_read() {
        let bytes: Carrier = serde_json::from_str("[255,0]").unwrap();
        assert_eq!(bytes.0, [255, 0]);
        let empty: Carrier = serde_json::from_str("null").unwrap();
        assert!(empty.0.is_empty());
    }

    #[test]
    fn wrong_payloads_say_what_is_expected() {
        let err = |json: &str| {
            serde_json::from_str::<Carrier>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(err("7").contains(r#"a string, {"base64""#), "{}", err("7"));
        assert!(err(r#"{"base64":"%%"}"#).contains("is not base64"));
        assert!(err(r#"{"hex":"ff"}"#).contains(r#"exactly one key, "base64"; found "hex""#));
        assert!(err("{}").contains(r#"needs "base64""#));
        assert!(err("[256]").contains("256"));
    }
}
