//! The model catalog: which `provider/model` names the gateway serves, their context lengths and prices.
//!
//! A versioned catalog is bundled into the binary. `QNP_MODELS_FILE` can extend it (add models, e.g. a
//! local Ollama model under `openai/`, or change a price) or replace it entirely. The version in force is
//! recorded on every usage row so a cost can always be traced to the prices that produced it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pricing::{LongContext, ServiceTiers};

mod prices;
use prices::check_prices;

const BUNDLED: &str = include_str!("../../catalog/models.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI and any server speaking its API (vLLM, Ollama, LM Studio, ...).
    Openai,
    Anthropic,
    Google,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Google => "google",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

/// One catalog entry. Prices are USD per million tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    /// The name clients use: `provider/model`.
    pub id: String,
    pub provider: ProviderKind,
    /// The name the upstream knows the model by.
    pub upstream_model: String,
    pub kind: ModelKind,
    pub context_length: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// Cache writes with the default (5 minute) lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    /// Cache writes with a 1-hour lifetime (Anthropic's `cache_control.ttl: "1h"`); twice the input rate
    /// when not given, as Anthropic prices them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_mtok: Option<f64>,
    /// The fee for one hosted web search (OpenAI's `web_search` tool), when the model may run one. Models
    /// without it cannot be sent requests that carry the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_per_call_usd: Option<f64>,
    /// A fee per input image, for models priced per image as well as (or instead of) by its tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_image_usd: Option<f64>,
    /// Rates for the processing tiers a request may select (`flex`, `priority`); a tier not listed
    /// here is refused for this model.
    #[serde(default, skip_serializing_if = "ServiceTiers::is_empty")]
    pub service_tiers: ServiceTiers,
    /// Higher rates for the whole request above a prompt size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
    /// The most input tokens one image can be billed as; the provider's default when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_image: Option<u64>,
    /// Operator-configured fallback route: models tried in order when this one's upstream fails
    /// before answering (connection error, 429, 5xx, overloaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Whether the upstream serves the Responses API itself (`/v1/responses`). OpenAI does; set `false`
    /// for an OpenAI-compatible server that only speaks chat completions (many vLLM, Ollama and LM Studio
    /// versions), and QNP translates Responses calls to chat for it, as it does for every other provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<bool>,
    /// Other names clients may call the model by (dated snapshots, names a tool hard-codes). A model's
    /// bare name (`gpt-4o-mini` for `openai/gpt-4o-mini`) needs none: it resolves on its own while no
    /// other provider has a model of that name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// Tokens one image may cost when the catalog does not say, per provider: OpenAI's tile-based models
/// reach about 1,500 and its patch-based ones about 3,800 (a few small models count images far higher and
/// carry their own figure in the catalog); Anthropic downscales past about 1,600; Gemini tiles at 258 a
/// tile. Rounded up generously: this only sizes a reservation.
fn default_image_tokens(provider: ProviderKind) -> u64 {
    match provider {
        ProviderKind::Openai => 6_000,
        ProviderKind::Anthropic => 5_000,
        ProviderKind::Google => 10_000,
    }
}

impl Model {
    /// Whether `/v1/responses` calls go to the upstream's own Responses endpoint.
    pub fn serves_responses(&self) -> bool {
        self.provider == ProviderKind::Openai && self.responses_api.unwrap_or(true)
    }

    /// The most tokens one call can generate: the catalog's output limit, else the context length.
    pub fn output_limit(&self) -> u64 {
        self.max_output_tokens.unwrap_or(self.context_length)
    }

    /// The most input tokens one image can be billed as.
    pub fn image_tokens_max(&self) -> u64 {
        self.max_tokens_per_image
            .unwrap_or_else(|| default_image_tokens(self.provider))
    }
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    version: String,
    /// `extend` (default) adds to and overrides the bundled catalog; `replace` discards it.
    #[serde(default)]
    mode: Mode,
    models: Vec<Model>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Extend,
    Replace,
}

#[derive(Debug)]
pub struct Catalog {
    version: String,
    models: Vec<Arc<Model>>,
    /// Every name a model answers to: its id, its aliases, and its bare name when unambiguous.
    by_id: HashMap<String, Arc<Model>>,
}

#[derive(Debug, thiserror::Error)]
#[error("QNP_MODELS_FILE {path}: {reason}")]
pub struct CatalogError {
    path: String,
    reason: String,
}

impl Catalog {
    pub fn bundled() -> Catalog {
        let file: CatalogFile =
            serde_json::from_str(BUNDLED).expect("the bundled catalog is valid JSON");
        for model in &file.models {
            if let Err(reason) = check_prices(model) {
                panic!("the bundled catalog's {}: {reason}", model.id);
            }
        }
        Catalog::new(file.version, file.models)
    }

    /// The bundled catalog, extended or replaced by the operator's file when one is configured.
    pub fn load(models_file: Option<&Path>) -> Result<Catalog, CatalogError> {
        let Some(path) = models_file else {
            return Ok(Catalog::bundled());
        };
        let err = |reason: String| CatalogError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: CatalogFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        for model in &file.models {
            let expected = format!("{}/", model.provider.as_str());
            if !model.id.starts_with(&expected) {
                return Err(err(format!(
                    "model id '{}' must start with '{expected}'",
                    model.id
                )));
            }
            check_prices(model).map_err(|reason| err(format!("model '{}': {reason}", model.id)))?;
        }
        if file.mode == Mode::Replace {
            return Ok(Catalog::new(file.version, file.models));
        }
        let bundled = Catalog::bundled();
        let mut models: Vec<Model> = bundled.models.iter().map(|m| (**m).clone()).collect();
        for model in file.models {
            match models.iter_mut().find(|m| m.id == model.id) {
                Some(existing) => *existing = model,
                None => models.push(model),
            }
        }
        Ok(Catalog::new(
            format!("{}+{}", bundled.version, file.version),
            models,
        ))
    }

    fn new(version: String, models: Vec<Model>) -> Catalog {
        let models: Vec<Arc<Model>> = models.into_iter().map(Arc::new).collect();
        let mut by_id: HashMap<String, Arc<Model>> = HashMap::new();
        // Weakest first, so a stronger claim on a name replaces a weaker one: bare names (only those
        // exactly one model has), then explicit aliases (a later model's over an earlier one's, as the
        // operator's file comes after the bundled catalog), then ids.
        let mut bare: HashMap<&str, Vec<&Arc<Model>>> = HashMap::new();
        for model in &models {
            if let Some((_, name)) = model.id.split_once('/') {
                bare.entry(name).or_default().push(model);
            }
        }
        for (name, owners) in bare {
            if let [only] = owners.as_slice() {
                by_id.insert(name.to_owned(), (*only).clone());
            }
        }
        for model in &models {
            for alias in &model.aliases {
                by_id.insert(alias.clone(), model.clone());
            }
        }
        for model in &models {
            by_id.insert(model.id.clone(), model.clone());
        }
        Catalog {
            version,
            models,
            by_id,
        }
    }

    /// The price table's version, recorded on every usage row.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The model a client's name means: an id, an alias, or an unambiguous bare name.
    pub fn get(&self, id: &str) -> Option<&Arc<Model>> {
        self.by_id.get(id)
    }

    pub fn models(&self) -> &[Arc<Model>] {
        &self.models
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::TokenUsage;

    #[test]
    fn bare_names_and_aliases_resolve_ambiguous_ones_do_not() {
        let bundled = Catalog::bundled();
        for name in ["gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-5-5"] {
            let model = bundled.get(name).unwrap();
            assert_eq!(model.id.split_once('/').unwrap().1, name);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.json");
        std::fs::write(
            &path,
            r#"{"version":"t","models":[
             {"id":"openai/shared-name","provider":"openai","upstream_model":"a","kind":"chat","context_length":10,"input_per_mtok":1,"output_per_mtok":1,"aliases":["gpt-4o-mini-2024-07-18"]},
             {"id":"google/shared-name","provider":"google","upstream_model":"b","kind":"chat","context_length":10,"input_per_mtok":1,"output_per_mtok":1}]}"#,
        )
        .unwrap();
        let catalog = Catalog::load(Some(&path)).unwrap();
        assert!(
            catalog.get("shared-name").is_none(),
            "two providers have it"
        );
        assert_eq!(
            catalog.get("google/shared-name").unwrap().upstream_model,
            "b"
        );
        assert_eq!(
            catalog.get("gpt-4o-mini-2024-07-18").unwrap().id,
            "openai/shared-name"
        );
        assert_eq!(catalog.get("gpt-4o-mini").unwrap().id, "openai/gpt-4o-mini");
        assert!(catalog.get("openai/nope").is_none());
    }

    #[test]
    fn bundled_catalog_covers_three_providers_and_embeddings() {
        let catalog = Catalog::bundled();
        assert!(catalog.models().len() >= 12);
        for provider in [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Google,
        ] {
            assert!(catalog.models().iter().any(|m| m.provider == provider));
        }
        assert!(
            catalog
                .models()
                .iter()
                .any(|m| m.kind == ModelKind::Embedding)
        );
        for model in catalog.models() {
            assert!(
                model
                    .id
                    .starts_with(&format!("{}/", model.provider.as_str()))
            );
            assert!(model.input_per_mtok > 0.0, "{} has no price", model.id);
            assert!(model.context_length > 0);
        }
    }

    #[test]
    fn cost_charges_cached_tokens_at_their_own_rate() {
        let catalog = Catalog::bundled();
        let model = catalog.get("openai/gpt-4o-mini").unwrap();
        let usage = TokenUsage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cached_tokens: 500_000,
            ..Default::default()
        };
        let expected = 0.5 * model.input_per_mtok
            + 0.5 * model.cached_input_per_mtok.unwrap()
            + model.output_per_mtok;
        assert!((model.cost_usd(&usage) - expected).abs() < 1e-9);
    }

    #[test]
    fn models_file_extends_or_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.json");
        std::fs::write(
            &path,
            r#"{"version":"local-1","models":[{"id":"openai/llama3.2","provider":"openai",
            "upstream_model":"llama3.2","kind":"chat","context_length":131072,
            "input_per_mtok":0.0,"output_per_mtok":0.0}]}"#,
        )
        .unwrap();
        let extended = Catalog::load(Some(&path)).unwrap();
        assert!(extended.get("openai/llama3.2").is_some());
        assert!(extended.get("openai/gpt-4o-mini").is_some());
        assert!(extended.version().ends_with("+local-1"));

        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"version\"", "\"mode\":\"replace\",\"version\"");
        std::fs::write(&path, text).unwrap();
        let replaced = Catalog::load(Some(&path)).unwrap();
        assert_eq!(replaced.models().len(), 1);
        assert_eq!(replaced.version(), "local-1");

        std::fs::write(&path, "{").unwrap();
        let err = Catalog::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("QNP_MODELS_FILE"));
    }
}
