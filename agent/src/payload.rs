//! Bytes that read well in JSON: a string when they are UTF-8, else `{"base64": "..."}` (an
//! array of byte values is read too). Event and query payloads, and query answers, travel
//! through the control API this way; the rule is the handlers crate's, so events and answers
//! read alike.

use serde::{Deserialize, Serialize};

/// A payload: a JSON string when it is UTF-8, else `{"base64": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(#[serde(with = "rumor_handlers::payload_json")] pub Vec<u8>);
