//! Property tests for every parser of outside input: whatever a client, an upstream or Stripe sends, the
//! parsers answer (a value or a clear error) and never panic. Case counts are bounded so CI stays quick.

use proptest::prelude::*;

use crate::catalog::{Catalog, ModelKind};
use crate::providers::RequestBody;
use crate::test_support::{arb_body, arb_json};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Request bodies: the top-level parse takes any bytes.
    #[test]
    fn request_bodies_parse_or_refuse(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(err) = RequestBody::parse(&bytes) {
            prop_assert_eq!(err.status().as_u16(), 400);
        }
    }

    /// The translations to Anthropic, Gemini and (for `/v1/messages`) OpenAI take any body.
    #[test]
    fn translations_take_any_body(value in arb_body(), stream in any::<bool>()) {
        let body = RequestBody::parse(value.to_string().as_bytes()).unwrap();
        let catalog = Catalog::bundled();
        for model in catalog.models().iter().filter(|m| m.kind == ModelKind::Chat) {
            let results = [
                crate::providers::anthropic::to_messages_request(&body, model, stream).map(|_| ()),
                crate::providers::gemini::to_gemini_request(&body, model).map(|_| ()),
                crate::providers::openai::messages::to_chat_request(&body, model, stream).map(|_| ()),
                crate::dialects::openai_responses::to_chat(&body, stream).map(|_| ()),
            ];
            for result in results {
                if let Err(err) = result {
                    prop_assert!(err.status().is_client_error(), "{err}");
                }
            }
        }
    }

    /// API keys in any shape.
    #[test]
    fn presented_keys_parse_or_not(text in ".{0,80}", tail in "[A-Za-z0-9_]{0,70}") {
        for candidate in [text.clone(), format!("qnp_{tail}")] {
            if let Some((id, secret)) = crate::keys::parse(&candidate) {
                prop_assert_eq!(id.len(), 16);
                prop_assert_eq!(secret.len(), 40);
            }
        }
    }

    /// Query strings for every query the dashboard API reads.
    #[test]
    fn query_strings_parse_or_refuse(query in "[a-z=&%0-9A-F+._~-]{0,60}", raw in ".{0,40}") {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Range { from: Option<String>, to: Option<String>, limit: Option<u64> }
        for q in [query, raw] {
            if let Ok(range) = crate::web::parse_query::<Range>(&q) {
                let _ = crate::usage::parse_range(range.from.as_deref(), range.to.as_deref(), time::OffsetDateTime::now_utc());
            }
        }
    }

    /// Server-sent events cut anywhere, with any bytes in them.
    #[test]
    fn event_streams_frame_any_bytes(data in prop::collection::vec(any::<u8>(), 0..512), cut in 1usize..64) {
        let mut framer = crate::providers::sse::SseFramer::default();
        let mut total = 0;
        for chunk in data.chunks(cut) {
            for event in framer.push(bytes::Bytes::copy_from_slice(chunk)) {
                total += event.len();
                let _ = crate::providers::sse::data(&event);
                let _ = crate::providers::sse::output_bytes(&event);
            }
        }
        total += framer.finish().map_or(0, |rest| rest.len());
        prop_assert_eq!(total, data.len(), "no byte lost or invented");
    }

    /// Stripe objects in any shape (after a valid signature, the payload is still outside input).
    #[test]
    fn stripe_subscriptions_parse_or_refuse(value in arb_json()) {
        let _ = crate::billing::events::StripeSubscription::try_from(value);
    }

    /// Date ranges as the export and summary routes take them: a range or a 400 naming the field.
    #[test]
    fn date_ranges_parse_or_name_the_field(from in ".{0,30}", to in "[0-9T:Z.+-]{0,30}") {
        let now = time::OffsetDateTime::now_utc();
        match crate::usage::parse_range(Some(&from), Some(&to), now) {
            Ok((a, b)) => prop_assert!(a <= b),
            Err(e) => prop_assert!(["from", "to"].contains(&e.field())),
        }
    }

    /// `Stripe-Signature` headers and bodies of any shape: accepted only with a valid signature.
    #[test]
    fn stripe_signature_headers_verify_or_refuse(header in ".{0,120}", body in prop::collection::vec(any::<u8>(), 0..128)) {
        let secrets = vec!["whsec_test".to_owned()];
        prop_assert!(crate::billing::events::verify_signature(&body, Some(&header), &secrets, 1_700_000_000).is_err());
    }
}
