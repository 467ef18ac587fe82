//! Property tests of the client message decoder (every browser frame, docs/protocol.md §2):
//! any text or bytes never panic, any object decodes the same however it is laid out, and
//! known types with string fields are accepted. Ordinary tests, 256 cases each.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::client::{ClientMessage, ParseError};

const TYPES: &[&str] = &[
    "init",
    "ping",
    "viewState",
    "deselectProject",
    "selectProject",
    "createProject",
    "deleteProject",
    "renameProject",
    "getProjectInfo",
    "message",
    "cancel",
    "getVersions",
    "getVersionEdits",
    "restoreVersion",
    "getJobStatus",
    "subscribeJob",
    "cancelJob",
    "testError",
    "noSuchType",
];

const FIELDS: &[&str] = &[
    "access_token",
    "sessionId",
    "projectId",
    "visible",
    "name",
    "content",
    "rawContent",
    "attachedAssets",
    "debugOptions",
    "autoFix",
    "selectedStyle",
    "skipStyleSelection",
    "jobId",
    "versionHash",
    "versionId",
    "errorType",
    "type",
    "extra",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((any::<String>(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// An object with a known (or unknown) `type` and known field names holding any values.
fn client_frame() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        vec((prop::sample::select(FIELDS), json_value()), 0..6),
    )
        .prop_map(|(kind, fields)| {
            let mut object: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            object.insert("type".into(), Value::String(kind.into()));
            Value::Object(object)
        })
}

fn outcome(text: &str) -> String {
    format!("{:?}", ClientMessage::parse(text))
}

proptest! {
    #[test]
    fn client_decoder_never_panics_on_any_text(text in any::<String>()) {
        let _ = ClientMessage::parse(&text);
    }

    #[test]
    fn client_decoder_never_panics_on_any_bytes(bytes in vec(any::<u8>(), 0..256)) {
        let _ = ClientMessage::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn client_decoder_reads_any_object_the_same_however_it_is_laid_out(frame in client_frame()) {
        let compact = serde_json::to_string(&frame).unwrap();
        let pretty = serde_json::to_string_pretty(&frame).unwrap();
        prop_assert_eq!(outcome(&compact), outcome(&pretty));
    }

    #[test]
    fn client_decoder_accepts_known_types_with_string_fields(
        kind in prop::sample::select(&TYPES[..TYPES.len() - 1]),
        value in any::<String>(),
    ) {
        let frame = json!({"type": kind, "projectId": value, "jobId": value, "name": value,
                           "content": value, "access_token": value});
        prop_assert!(ClientMessage::parse(&frame.to_string()).is_ok(), "{}", frame);
    }
}

#[test]
fn client_decoder_survives_deep_nesting() {
    let deep = format!(
        "{{\"type\":\"message\",\"content\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        ClientMessage::parse(&deep).unwrap_err(),
        ParseError::Malformed
    );
}
