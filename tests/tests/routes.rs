//! Routes are declared once, in each function's `endpoints()`: this ties template.yaml's API routes and
//! the HTTP table in docs/http.md to them, in both directions, so a route cannot be served without being
//! deployed and documented, nor deployed or documented without being served.

use std::collections::{BTreeMap, BTreeSet};

use qnp_shared::routes::{Access, RouteSpec, api_gateway_path, specs};
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each Lambda binary's routes, from the routers.
fn served() -> BTreeMap<&'static str, Vec<RouteSpec>> {
    BTreeMap::from([
        ("auth", specs(&qnp_auth::endpoints())),
        ("dashboard", specs(&qnp_dashboard::endpoints())),
        ("export", specs(&qnp_export::endpoints())),
        ("proxy", specs(&qnp_proxy::endpoints())),
        ("stripe-webhook", specs(&qnp_stripe_webhook::endpoints())),
    ])
}

/// `(method, path)` in API Gateway's syntax.
fn keys(routes: &[RouteSpec]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .map(|r| (r.method.clone(), api_gateway_path(r.path)))
        .collect()
}

/// Each binary's HttpApi routes in template.yaml.
fn deployed() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let docs =
        YamlLoader::load_from_str(&repo_file("template.yaml")).expect("template.yaml parses");
    let Yaml::Hash(resources) = &docs[0]["Resources"] else {
        panic!("template.yaml has no Resources");
    };
    let mut routes: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (_, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("every function names its binary")
            .to_owned();
        let entry = routes.entry(binary).or_default();
        if let Yaml::Hash(events) = &resource["Properties"]["Events"] {
            for (_, event) in events {
                if event["Type"].as_str() == Some("HttpApi") {
                    let props = &event["Properties"];
                    entry.insert((
                        props["Method"].as_str().expect("Method").to_uppercase(),
                        props["Path"].as_str().expect("Path").to_owned(),
                    ));
                }
            }
        }
    }
    routes
}

#[test]
fn template_yaml_deploys_exactly_the_routes_the_routers_serve() {
    let deployed = deployed();
    for (binary, routes) in served() {
        let want = keys(&routes);
        let have = deployed.get(binary).cloned().unwrap_or_default();
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{binary}: served but not in template.yaml: {missing:?}; in template.yaml but not served: {extra:?}"
        );
    }
    for (binary, routes) in &deployed {
        assert!(
            routes.is_empty() || served().contains_key(binary.as_str()),
            "template.yaml routes {routes:?} to '{binary}', which serves no routes"
        );
    }
}

/// `| METHOD | path | access | ... |` rows of docs/http.md.
fn documented() -> BTreeSet<(String, String, String)> {
    repo_file("docs/http.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = *cells.get(1)?;
            let known = ["GET", "POST", "PATCH", "DELETE", "PUT"];
            known.contains(&method).then(|| {
                (
                    method.to_owned(),
                    cells[2].trim_matches('`').to_owned(),
                    cells[3].to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn docs_http_md_lists_exactly_the_routes_the_routers_serve() {
    let access = |a: Access| match a {
        Access::Public => "public",
        Access::Session => "session",
        Access::ApiKey => "API key",
    };
    let served: BTreeSet<(String, String, String)> = served()
        .into_values()
        .flatten()
        .map(|r| {
            (
                r.method.clone(),
                r.path.to_owned(),
                access(r.access).to_owned(),
            )
        })
        .collect();
    let documented = documented();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not in docs/http.md: {missing:?}; in docs/http.md but not served: {extra:?}"
    );
}

#[test]
fn only_public_routes_skip_the_session_guard() {
    for (binary, routes) in served() {
        for route in routes {
            if route.path.starts_with("/v1/") {
                assert_eq!(route.access, Access::ApiKey, "{binary} {}", route.path);
            }
            if route.path.starts_with("/keys") || route.path.starts_with("/account") {
                assert_eq!(route.access, Access::Session, "{binary} {}", route.path);
            }
        }
    }
}
