//! Identity-provider stand-ins for the sign-in tests: the real `oidc-provider` (Node, tests/oidc) for
//! complete flows, and a tiny in-process issuer that serves whatever ID token a test mints, for the
//! invalid-token cases a real provider never produces. Plus a cookie-keeping browser.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// Keys made by Node's crypto (Node is already required for the provider): a P-256 pair for Apple's
/// client secret and an RSA key (PEM + public JWK) for minting ID tokens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TestKeys {
    pub p256_private_pem: String,
    pub p256_public_pem: String,
    pub rsa_private_pem: String,
    pub rsa_public_jwk: Value,
}

pub fn test_keys() -> TestKeys {
    let script = r#"
const c = require('crypto');
const ec = c.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = c.generateKeyPairSync('rsa', { modulusLength: 2048 });
console.log(JSON.stringify({
  p256_private_pem: ec.privateKey.export({ type: 'pkcs8', format: 'pem' }),
  p256_public_pem: ec.publicKey.export({ type: 'spki', format: 'pem' }),
  rsa_private_pem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }),
  rsa_public_jwk: rsa.publicKey.export({ format: 'jwk' }),
}));"#;
    let out = Command::new("node")
        .args(["-e", script])
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The real OpenID provider from tests/oidc, on a free loopback port.
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    pub fn start(env: &[(&str, String)]) -> OidcProvider {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc");
        assert!(
            dir.join("node_modules").exists(),
            "tests/oidc/node_modules is missing: run tests/run.sh (it runs npm ci there)"
        );
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the OIDC provider");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let issuer = line
            .trim()
            .strip_prefix("oidc listening on ")
            .unwrap_or_else(|| panic!("unexpected provider output: {line:?}"))
            .to_owned();
        OidcProvider { issuer, child }
    }
}

/// An issuer that serves a discovery document, a JWKS with the test's RSA key (kid `test-key`), and a
/// token endpoint answering with the ID token the test set.
pub struct FakeIssuer {
    pub issuer: String,
    id_token: Arc<Mutex<String>>,
}

#[derive(Clone)]
struct FakeState {
    issuer: String,
    jwk: Value,
    id_token: Arc<Mutex<String>>,
}

impl FakeIssuer {
    pub async fn start(keys: &TestKeys) -> FakeIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut jwk = keys.rsa_public_jwk.clone();
        jwk["kid"] = json!("test-key");
        jwk["alg"] = json!("RS256");
        jwk["use"] = json!("sig");
        let id_token = Arc::new(Mutex::new(String::new()));
        let state = FakeState {
            issuer: issuer.clone(),
            jwk,
            id_token: id_token.clone(),
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(|State(s): State<FakeState>| async move {
                Json(json!({
                    "issuer": s.issuer,
                    "authorization_endpoint": format!("{}/authorize", s.issuer),
                    "token_endpoint": format!("{}/token", s.issuer),
                    "jwks_uri": format!("{}/jwks", s.issuer),
                }))
            }))
            .route("/jwks", get(|State(s): State<FakeState>| async move { Json(json!({"keys": [s.jwk]})) }))
            .route("/token", post(|State(s): State<FakeState>| async move {
                let token = s.id_token.lock().unwrap().clone();
                Json(json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": token}))
            }))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeIssuer { issuer, id_token }
    }

    pub fn answer_with(&self, id_token: String) {
        *self.id_token.lock().unwrap() = id_token;
    }
}

/// Mints an RS256 ID token with the given claims.
pub fn mint_id_token(keys: &TestKeys, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(keys.rsa_private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A browser-like client: keeps cookies per host:port, never follows redirects by itself.
#[derive(Clone)]
pub struct Browser {
    pub http: reqwest::Client,
    jar: Arc<Mutex<BTreeMap<(String, String), String>>>,
    /// (host, cookie name) of every Set-Cookie this browser was sent, cleared ones included.
    pub cookies_set: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Arc::default(),
            cookies_set: Arc::default(),
        }
    }

    fn host(url: &str) -> String {
        let url = reqwest::Url::parse(url).unwrap();
        format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        )
    }

    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar
            .lock()
            .unwrap()
            .get(&(Browser::host(url), name.into()))
            .cloned()
    }

    pub fn set_cookie(&self, url: &str, name: &str, value: &str) {
        self.jar
            .lock()
            .unwrap()
            .insert((Browser::host(url), name.into()), value.into());
    }

    pub fn cookie_header(&self, url: &str) -> String {
        let host = Browser::host(url);
        self.jar
            .lock()
            .unwrap()
            .iter()
            .filter(|((h, _), _)| *h == host)
            .map(|((_, name), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Records the response's cookies (a `Max-Age=0` one deletes) and returns the raw `Set-Cookie`s.
    pub fn absorb(&self, url: &str, response: &reqwest::Response) -> Vec<String> {
        let host = Browser::host(url);
        let mut raw = Vec::new();
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap().to_owned();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies_set
                .lock()
                .unwrap()
                .insert((host.clone(), name.trim().into()));
            let mut jar = self.jar.lock().unwrap();
            if text.contains("Max-Age=0") {
                jar.remove(&(host.clone(), name.trim().into()));
            } else {
                jar.insert((host.clone(), name.trim().into()), value.into());
            }
            raw.push(text);
        }
        raw
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        let response = self
            .http
            .get(url)
            .header(COOKIE, self.cookie_header(url))
            .send()
            .await
            .unwrap();
        self.absorb(url, &response);
        response
    }

    /// Follows 3xx redirects (GET) until a non-redirect or a URL starting with `stop_at`.
    pub async fn follow(&self, mut url: String, stop_at: &str) -> (String, reqwest::Response) {
        for _ in 0..10 {
            let response = self.get(&url).await;
            if !response.status().is_redirection() {
                return (url, response);
            }
            let location = response.headers()[LOCATION].to_str().unwrap();
            let next = reqwest::Url::parse(&url)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
            if next.starts_with(stop_at) {
                return (next, response);
            }
            url = next;
        }
        panic!("too many redirects");
    }
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The hidden inputs of an auto-submitting form (Apple's form_post response).
pub fn form_fields(html: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for input in html.split("<input").skip(1) {
        let attr = |name: &str| {
            let start = input.find(&format!("{name}=\""))? + name.len() + 2;
            let end = input[start..].find('"')? + start;
            Some(
                input[start..end]
                    .replace("&amp;", "&")
                    .replace("&quot;", "\"")
                    .replace("&#x2F;", "/"),
            )
        };
        if let (Some(name), Some(value)) = (attr("name"), attr("value")) {
            fields.insert(name, value);
        }
    }
    fields
}

/// The payload of a JWT, unverified (tests read their own state cookie).
pub fn jwt_payload(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
