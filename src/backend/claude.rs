//! Claude Code `stream-json` lines → normalized backend events. Both backends see the same
//! raw CLI events (Modal passes them through, the local process prints them), so both use
//! this one interpretation (docs/decisions.md, decision 2).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

/// One event parsed from the Claude CLI's streamed JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliEvent {
    /// Assistant text, shown in the streaming panel.
    Text(String),
    /// The model called a tool (`Write`, `Edit`, ...).
    ToolUse(String),
    /// The CLI's final `result` line.
    Result {
        is_error: bool,
        text: Option<String>,
    },
}

/// Interpret one parsed CLI line. Unknown types and `system` / `user` lines yield nothing.
pub fn interpret(line: &Value) -> Vec<CliEvent> {
    let line = match line.get("type").and_then(Value::as_str) {
        Some("stream_event") => match line.get("event") {
            Some(inner) => inner,
            None => return Vec::new(),
        },
        _ => line,
    };
    let kind = line.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "assistant" => line
            .pointer("/message/content")
            .and_then(Value::as_array)
            .map(|blocks| blocks.iter().filter_map(block_event).collect())
            .unwrap_or_default(),
        "content_block_start" => line
            .get("content_block")
            .and_then(block_event)
            .into_iter()
            .collect(),
        "content_block_delta" => {
            let delta = line.get("delta");
            match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                Some("text_delta") => delta
                    .and_then(|d| d.get("text"))
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| vec![CliEvent::Text(t.to_string())])
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        }
        "result" => vec![CliEvent::Result {
            is_error: line
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            text: line
                .get("result")
                .and_then(Value::as_str)
                .map(str::to_string),
        }],
        _ => Vec::new(),
    }
}

/// Reads an `assistant` line — most of a job's lines — straight from its text, without
/// building a JSON tree. `None` when the line is anything else or not in the usual shape (a
/// field of an unexpected type, a repeated key): [`interpret`] then reads it, with the same
/// result for every line this accepts.
pub fn interpret_assistant(line: &str) -> Option<Vec<CliEvent>> {
    #[derive(Deserialize)]
    struct Line<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        message: Message<'a>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        content: Vec<Block<'a>>,
    }
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
    }

    let line: Line<'_> = serde_json::from_str(line).ok()?;
    if line.kind != "assistant" {
        return None;
    }
    let events = line
        .message
        .content
        .into_iter()
        .filter_map(|block| match &*block.kind {
            "text" => block
                .text
                .filter(|text| !text.is_empty())
                .map(|text| CliEvent::Text(text.into_owned())),
            "tool_use" => Some(CliEvent::ToolUse(
                block
                    .name
                    .filter(|name| !name.is_empty())
                    .map_or_else(|| "unknown".to_string(), Cow::into_owned),
            )),
            _ => None,
        });
    Some(events.collect())
}

fn block_event(block: &Value) -> Option<CliEvent> {
    match block.get("type").and_then(Value::as_str)? {
        "text" => block
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| CliEvent::Text(t.to_string())),
        "tool_use" => Some(CliEvent::ToolUse(
            block
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn assistant_lines_read_without_a_tree_agree_with_the_tree() {
        let lines = [
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"ジャンプ\n"},{"type":"tool_use","id":"t1","name":"Edit","input":{"a":[1,{"b":null}]}},{"type":"thinking","thinking":"..."}]}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":""},{"type":"tool_use","name":""},{"type":"tool_use","name":null},{"type":"text","text":null}]},"session_id":"s"}"#,
            r#"{"type":"assistant","message":{"content":[]}}"#,
        ];
        for line in lines {
            let tree: Value = serde_json::from_str(line).unwrap();
            assert_eq!(interpret_assistant(line), Some(interpret(&tree)), "{line}");
        }
        // Anything else, or an unusual shape, is left to the tree.
        for line in [
            r#"{"type":"result","is_error":false,"result":"ok"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":5}]}}"#,
            r#"{"type":"assistant","message":{"content":"text"}}"#,
            r#"{"type":"assistant","message":{"content":[{"text":"no type"}]}}"#,
            r#"{"type":"assistant"}"#,
            "not json",
        ] {
            assert_eq!(interpret_assistant(line), None, "{line}");
        }
    }

    #[test]
    fn assistant_blocks_in_order() {
        let line = json!({"type":"assistant","message":{"content":[
            {"type":"text","text":"ジャンプ力を上げます。"},
            {"type":"tool_use","id":"t1","name":"Edit","input":{}},
            {"type":"thinking","thinking":"..."}
        ]}});
        assert_eq!(
            interpret(&line),
            vec![
                CliEvent::Text("ジャンプ力を上げます。".into()),
                CliEvent::ToolUse("Edit".into())
            ]
        );
    }

    #[test]
    fn partial_messages_are_unwrapped() {
        let line = json!({"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"ab"}}});
        assert_eq!(interpret(&line), vec![CliEvent::Text("ab".into())]);
        let line = json!({"type":"content_block_start","content_block":{"type":"tool_use","name":"Write"}});
        assert_eq!(interpret(&line), vec![CliEvent::ToolUse("Write".into())]);
    }

    #[test]
    fn result_and_ignored_lines() {
        let line = json!({"type":"result","subtype":"success","is_error":false,"result":"done"});
        assert_eq!(
            interpret(&line),
            vec![CliEvent::Result {
                is_error: false,
                text: Some("done".into())
            }]
        );
        assert!(interpret(&json!({"type":"system","subtype":"init"})).is_empty());
        assert!(interpret(&json!({"type":"user","message":{"content":[]}})).is_empty());
        assert!(interpret(&json!(42)).is_empty());
        assert!(interpret(
            &json!({"type":"assistant","message":{"content":[{"type":"text","text":""}]}})
        )
        .is_empty());
    }
}
