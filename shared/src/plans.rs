//! Plans: what an account's subscription entitles its keys to. Plans are configuration, not code: a bundled
//! table that `QNP_PLANS_FILE` replaces. `free` is every new account's plan; `unlimited` is operator-only
//! (internal use, benchmarks) and can only be set from the `qnp` command line.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

pub const DEFAULT_PLAN: &str = "free";

#[derive(Debug, Clone, Deserialize)]
pub struct Plan {
    pub name: String,
    pub requests_per_minute: u64,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub monthly_spend_cap_usd: Option<f64>,
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    /// Not offered to users; only an operator can put an account on it.
    #[serde(default)]
    pub operator_only: bool,
}

/// The bundled plan table, as JSON (what `QNP_PLANS` replaces).
pub const BUNDLED: &str = r#"[
  {"name": "free", "requests_per_minute": 20, "tokens_per_minute": 40000, "monthly_spend_cap_usd": 1.0},
  {"name": "pro", "requests_per_minute": 600, "tokens_per_minute": 2000000, "monthly_spend_cap_usd": 200.0},
  {"name": "unlimited", "requests_per_minute": 1000000000, "operator_only": true}
]"#;

#[derive(Debug, Clone)]
pub struct Plans {
    by_name: HashMap<String, Plan>,
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct PlansError {
    source_name: String,
    reason: String,
}

impl Plans {
    pub fn bundled() -> Plans {
        Plans::from_list(serde_json::from_str(BUNDLED).expect("bundled plans are valid"))
    }

    /// The plan table from `QNP_PLANS` (inline JSON), else `QNP_PLANS_FILE`, else the bundled one.
    pub fn from_config(config: &crate::config::Config) -> Result<Plans, PlansError> {
        match &config.plans_json {
            Some(json) => Plans::from_json(json).map_err(|reason| PlansError {
                source_name: "QNP_PLANS".into(),
                reason,
            }),
            None => Plans::load(config.plans_file.as_deref()),
        }
    }

    pub fn load(path: Option<&Path>) -> Result<Plans, PlansError> {
        let Some(path) = path else {
            return Ok(Plans::bundled());
        };
        let err = |reason: String| PlansError {
            source_name: format!("QNP_PLANS_FILE {}", path.display()),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Plans::from_json(&text).map_err(err)
    }

    /// Parses and checks a plan table: a `free` plan exists, and no two plans share a Stripe price.
    pub fn from_json(text: &str) -> Result<Plans, String> {
        let list: Vec<Plan> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut prices = std::collections::HashSet::new();
        for plan in &list {
            if let Some(price) = &plan.stripe_price_id
                && !prices.insert(price.as_str())
            {
                return Err(format!("two plans use the Stripe price '{price}'"));
            }
        }
        let plans = Plans::from_list(list);
        if plans.get(DEFAULT_PLAN).is_none() {
            return Err(format!("there must be a '{DEFAULT_PLAN}' plan"));
        }
        Ok(plans)
    }

    fn from_list(list: Vec<Plan>) -> Plans {
        Plans {
            by_name: list.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.by_name.get(name)
    }

    /// The plan for an account: an account on a plan that was since removed from configuration falls back
    /// to the default plan rather than losing access.
    pub fn for_account(&self, name: &str) -> &Plan {
        self.by_name
            .get(name)
            .or_else(|| self.by_name.get(DEFAULT_PLAN))
            .expect("the default plan exists")
    }

    /// The plan a Stripe price subscribes to.
    pub fn by_stripe_price(&self, price_id: &str) -> Option<&Plan> {
        self.by_name
            .values()
            .find(|p| p.stripe_price_id.as_deref() == Some(price_id))
    }

    /// Plans a user can buy through Checkout, cheapest limits first.
    pub fn purchasable(&self) -> Vec<&Plan> {
        let mut plans: Vec<&Plan> = self
            .by_name
            .values()
            .filter(|p| p.stripe_price_id.is_some() && !p.operator_only)
            .collect();
        plans.sort_by_key(|p| (p.requests_per_minute, p.name.clone()));
        plans
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_plans_include_free_and_operator_only_unlimited() {
        let plans = Plans::bundled();
        assert!(!plans.get("free").unwrap().operator_only);
        assert!(plans.get("unlimited").unwrap().operator_only);
        assert_eq!(plans.for_account("gone").name, "free");
    }

    #[test]
    fn plans_file_must_have_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.json");
        std::fs::write(&path, r#"[{"name":"team","requests_per_minute":5}]"#).unwrap();
        let err = Plans::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("'free'"));
    }
}
