//! The `qnp` binary as an operator and a new user run it: keys, serve, usage export, on the embedded store.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qnp_tests::{MockOpenAi, UPSTREAM_KEY};
use serde_json::json;

const QNP: &str = env!("CARGO_BIN_EXE_qnp");
const SESSION_SECRET: &str = "cli-test-session-secret-0123456789";

fn qnp(data_dir: &std::path::Path, upstream: &str, args: &[&str]) -> std::process::Output {
    Command::new(QNP)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("QNP_DATA_DIR", data_dir)
        .env("QNP_OPENAI_BASE_URL", format!("{upstream}/v1"))
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .env("QNP_BCRYPT_COST", "4")
        .output()
        .expect("run qnp")
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "qnp failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `qnp serve` on a free port; without an upstream, no provider credential is configured.
fn serve(data_dir: &std::path::Path, upstream: Option<&str>) -> Server {
    let mut command = Command::new(QNP);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("QNP_DATA_DIR", data_dir)
        .env("QNP_SESSION_SECRET", SESSION_SECRET)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    if let Some(upstream) = upstream {
        command
            .env("QNP_OPENAI_BASE_URL", format!("{upstream}/v1"))
            .env("OPENAI_API_KEY", UPSTREAM_KEY);
    }
    let mut child = command.spawn().expect("start qnp serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("qnp listening on ") {
                let _ = tx.send(
                    line[at + "qnp listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("qnp serve announces its address");
    Server { child, url }
}

#[tokio::test]
async fn keys_serve_and_usage_export_work_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let up = upstream.url().to_owned();

    let created = qnp(
        dir.path(),
        &up,
        &[
            "keys",
            "create",
            "--email",
            "me@example.com",
            "--name",
            "laptop, main",
        ],
    );
    let out = stdout(&created);
    let key = out.lines().last().unwrap().to_owned();
    assert!(
        qnp_shared::keys::parse(&key).is_some(),
        "last line is the key: {out}"
    );
    assert_eq!(
        out.lines().count(),
        1,
        "the key is printed once, alone on stdout"
    );

    let bad_plan = qnp(
        dir.path(),
        &up,
        &[
            "keys",
            "create",
            "--email",
            "me@example.com",
            "--plan",
            "platinum",
        ],
    );
    assert!(!bad_plan.status.success());
    assert!(String::from_utf8_lossy(&bad_plan.stderr).contains("no plan 'platinum'"));
    let bad_email = qnp(
        dir.path(),
        &up,
        &["keys", "create", "--email", "not-an-email"],
    );
    assert!(!bad_email.status.success());

    let started = Instant::now();
    let server = serve(dir.path(), Some(&up));
    eprintln!("qnp serve ready after {:?}", started.elapsed());
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.url);
    let body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]});
    assert_eq!(
        http.post(&url)
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = http
        .post(&url)
        .bearer_auth(&key)
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));

    // Rows are written in the background; poll the export until both calls are there.
    let deadline = Instant::now() + Duration::from_secs(5);
    let csv = loop {
        let csv = stdout(&qnp(
            dir.path(),
            &up,
            &["usage", "export", "--email", "me@example.com"],
        ));
        if csv.lines().count() == 3 || Instant::now() > deadline {
            break csv;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp,request_id,api_key_id,endpoint,provider,model,streamed,status,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,latency_ms,ttft_ms,cost_usd,error_type"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let (key_id, _) = qnp_shared::keys::parse(&key).unwrap();
    for row in &rows {
        assert_eq!(row[2], key_id);
        assert_eq!(row[5], "openai/gpt-4o-mini");
        assert_eq!(row[7], "200");
        assert_eq!(row[8], "9");
        assert!(row[14].parse::<f64>().unwrap() > 0.0);
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r[6] == "true" && !r[13].is_empty())
            .count(),
        1,
        "the stream has a ttft"
    );
    let none = stdout(&qnp(
        dir.path(),
        &up,
        &[
            "usage",
            "export",
            "--email",
            "me@example.com",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-31",
        ],
    ));
    assert_eq!(none.lines().count(), 1, "header only outside the range");
    let bad = qnp(
        dir.path(),
        &up,
        &[
            "usage",
            "export",
            "--email",
            "me@example.com",
            "--from",
            "last week",
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'from'"));

    let listed = stdout(&qnp(
        dir.path(),
        &up,
        &["keys", "list", "--email", "me@example.com"],
    ));
    assert!(
        listed.contains(key_id) && listed.contains("laptop, main") && listed.contains("active")
    );
    assert!(
        !listed.contains(&key[key.len() - 40..]),
        "the secret is never listed"
    );
    stdout(&qnp(dir.path(), &up, &["keys", "revoke", key_id]));
    let listed = stdout(&qnp(
        dir.path(),
        &up,
        &["keys", "list", "--email", "me@example.com"],
    ));
    assert!(listed.contains("revoked"));
    assert!(
        !qnp(dir.path(), &up, &["keys", "revoke", key_id])
            .status
            .success()
    );
}

#[tokio::test]
async fn serve_starts_without_upstream_credentials_and_answers_503_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let created = Command::new(QNP)
        .args(["keys", "create", "--email", "solo@example.com"])
        .env_clear()
        .env("QNP_DATA_DIR", dir.path())
        .env("QNP_BCRYPT_COST", "4")
        .output()
        .unwrap();
    let key = stdout(&created).lines().last().unwrap().to_owned();
    let server = serve(dir.path(), None);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&key)
        .json(
            &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );
}

#[test]
fn a_malformed_variable_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(QNP)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("QNP_DATA_DIR", dir.path())
        .env("QNP_MAX_BODY_BYTES", "huge")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("QNP_MAX_BODY_BYTES"));
}

#[tokio::test]
async fn keys_get_controls_and_new_secrets_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let up = upstream.url().to_owned();
    let created = stdout(&qnp(
        dir.path(),
        &up,
        &[
            "keys",
            "create",
            "--email",
            "ops@example.com",
            "--models",
            "openai/gpt-4o*",
            "--rpm",
            "30",
            "--spend-limit-usd",
            "2.5",
        ],
    ));
    let old = created.lines().last().unwrap().to_owned();
    let (key_id, _) = qnp_shared::keys::parse(&old).unwrap();
    let key_id = key_id.to_owned();
    let list = |dir: &std::path::Path| {
        stdout(&qnp(
            dir,
            &up,
            &["keys", "list", "--email", "ops@example.com"],
        ))
    };
    let listed = list(dir.path());
    assert!(
        listed.contains("models=openai/gpt-4o*")
            && listed.contains("rpm=30")
            && listed.contains("spend_limit_usd=2.5"),
        "{listed}"
    );

    // `none` clears a control; the others are left as they were; a bad value names its field.
    let updated = stdout(&qnp(
        dir.path(),
        &up,
        &[
            "keys",
            "update",
            &key_id,
            "--rpm",
            "none",
            "--expires-at",
            "2031-01-01",
        ],
    ));
    assert!(
        updated.contains("expires=2031-01-01T00:00:00.000Z") && !updated.contains("rpm="),
        "{updated}"
    );
    assert!(updated.contains("models=openai/gpt-4o*"), "{updated}");
    let bad = qnp(
        dir.path(),
        &up,
        &["keys", "update", &key_id, "--expires-at", "yesterday"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'expires_at'"));

    // Rotation: a new secret under the same id, the old one still listed as rotating.
    let rotated = qnp(dir.path(), &up, &["keys", "rotate", &key_id]);
    let new = stdout(&rotated).lines().last().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(qnp_shared::keys::parse(&new).unwrap().0, key_id);
    assert!(String::from_utf8_lossy(&rotated.stderr).contains("the old secret works until"));
    assert!(list(dir.path()).contains("rotating"));

    // The gateway honours both secrets and the allowlist.
    let server = serve(dir.path(), Some(&up));
    let http = reqwest::Client::new();
    for (secret, model, status) in [
        (&new, "openai/gpt-4o-mini", 200),
        (&old, "openai/gpt-4o-mini", 200),
        (&new, "openai/gpt-6-luna", 403),
    ] {
        let response = http
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(secret)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{model}");
    }
}

/// SIGTERM to `qnp serve` with a stream in flight: no new connection is taken, the stream finishes
/// whole, its usage row is written, and the process exits 0.
#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_then_flushes_usage_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let up = upstream.url().to_owned();
    let models = dir.path().join("models.json");
    std::fs::write(&models, qnp_tests::TEST_MODELS).unwrap();
    let key = stdout(&qnp(
        dir.path(),
        &up,
        &["keys", "create", "--email", "term@example.com"],
    ))
    .trim()
    .to_owned();
    let mut command = Command::new(QNP);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("QNP_DATA_DIR", dir.path())
        .env("QNP_SESSION_SECRET", SESSION_SECRET)
        .env("QNP_MODELS_FILE", &models)
        .env("QNP_OPENAI_BASE_URL", format!("{up}/v1"))
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("qnp listening on ") {
                let url = line[at + "qnp listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(url);
            }
            seen.lock().unwrap().push_str(&line);
            seen.lock().unwrap().push('\n');
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(10)).unwrap();

    // Twenty words, 40 ms apart: about 0.8 s of stream.
    let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let response = qnp_tests::http_client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "openai/mock-slowstream", "stream": true,
                      "messages": [{"role": "user", "content": words.join(" ")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut body = first.to_vec();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(body).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("w19"), "the whole answer arrived: {text}");
    // No new connection is accepted once shutting down.
    let refused = reqwest::Client::new()
        .get(format!("{url}/v1/models"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "a new request after SIGTERM was served");
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        log.lock().unwrap().contains("usage log flushed"),
        "{}",
        log.lock().unwrap()
    );
    let csv = stdout(&qnp(
        dir.path(),
        &up,
        &["usage", "export", "--email", "term@example.com"],
    ));
    assert_eq!(
        csv.lines().count(),
        2,
        "the stream's row was written: {csv}"
    );
}
