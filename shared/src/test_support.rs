//! Strategies the property tests share: arbitrary JSON of bounded size, and request bodies whose fields
//! are the ones the gateway reads, holding values of every JSON type.

use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, nested up to four levels, with the numbers that break arithmetic (0, negatives,
/// u64::MAX, 2^63, floats with exponents) well represented.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(u64::MAX)),
            Just(json!(1u64 << 63)),
            Just(json!(4_294_967_296u64)),
            Just(json!(1e308)),
            Just(json!(-0.5)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
        ],
        prop_oneof![
            "[a-z_]{0,12}",
            Just("image_url".to_owned()),
            Just("file".to_owned()),
            Just("priority".to_owned()),
            Just("data:image/png;base64,AAAA".to_owned()),
            ".{0,24}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// The field names request parsers look at, and a few they do not.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model"),
        Just("messages"),
        Just("role"),
        Just("content"),
        Just("type"),
        Just("text"),
        Just("image_url"),
        Just("url"),
        Just("file"),
        Just("file_id"),
        Just("tools"),
        Just("function"),
        Just("name"),
        Just("parameters"),
        Just("tool_calls"),
        Just("tool_call_id"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("n"),
        Just("stream"),
        Just("stop"),
        Just("system"),
        Just("response_format"),
        Just("tool_choice"),
        Just("service_tier"),
        Just("prediction"),
        Just("temperature"),
        Just("other"),
    ]
    .prop_map(str::to_owned)
}

/// A request body: an object of gateway-relevant fields with arbitrary values, usually with a
/// plausible `messages` array so the parsers get past their first checks.
pub fn arb_body() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((field_name(), arb_json()), 0..8),
        prop::option::of(prop::collection::vec(
            (
                prop_oneof![
                    Just("user"),
                    Just("assistant"),
                    Just("system"),
                    Just("tool"),
                    Just("developer")
                ],
                arb_json(),
            ),
            0..4,
        )),
    )
        .prop_map(|(fields, messages)| {
            let mut body: serde_json::Map<String, Value> = fields.into_iter().collect();
            if let Some(messages) = messages {
                body.insert(
                    "messages".into(),
                    Value::Array(
                        messages
                            .into_iter()
                            .map(|(role, content)| json!({"role": role, "content": content}))
                            .collect(),
                    ),
                );
            }
            Value::Object(body)
        })
}
