//! The control API's request bodies (`control::api`): any bytes parse to a request or give an
//! error, and what a request carries on to — keys, query filters, member filters in the URL —
//! is checked without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor::cluster::keyring::Key;
use rumor::cluster::message;
use rumor::cluster::query::QueryFilter;
use rumor::control::api::{
    EventRequest, ForceLeaveRequest, JoinRequest, KeysRequest, MembersQuery, QueryRequest,
    ReachabilityRequest, TagsRequest, parse_query,
};

fuzz_target!(|data: &[u8]| {
    // `POST` bodies, as the server reads them.
    let _ = serde_json::from_slice::<JoinRequest>(data);
    let _ = serde_json::from_slice::<ForceLeaveRequest>(data);
    let _ = serde_json::from_slice::<ReachabilityRequest>(data);
    if let Ok(event) = serde_json::from_slice::<EventRequest>(data) {
        let _ = message::check_event_name(&event.name);
    }
    if let Ok(tags) = serde_json::from_slice::<TagsRequest>(data) {
        for key in tags.set.keys() {
            let _ = message::check_tag_key(key);
        }
        let _ = message::tags_size(&tags.set);
    }
    if let Ok(keys) = serde_json::from_slice::<KeysRequest>(data)
        && let Some(key) = keys.key
    {
        let _ = Key::parse(&key);
    }
    if let Ok(query) = serde_json::from_slice::<QueryRequest>(data) {
        let filter = QueryFilter {
            nodes: query.nodes,
            tags: query.tags.into_iter().collect(),
        };
        let _ = filter.compile();
    }
    // `GET` query strings.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_query(text);
        if let Ok(q) = MembersQuery::from_query_string(text) {
            assert_eq!(
                MembersQuery::from_query_string(&q.to_query_string()).as_ref(),
                Ok(&q),
                "a members query does not round-trip through its URL form"
            );
        }
    }
});
