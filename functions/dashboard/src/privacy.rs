//! `GET /privacy` and `GET /privacy.json`: the privacy policy rendered from the facts of the running
//! configuration (`qnp_shared::privacy`), or an operator's own file (`QNP_PRIVACY_FILE`, Markdown or
//! HTML). Both are rendered once at start; the page is plain HTML with the dashboard's stylesheet and no
//! script, served with the dashboard's headers.
//!
//! Its "last updated" date is `QNP_PRIVACY_UPDATED`, or else the date the rendered content last changed:
//! `qnp serve` keeps the content's version and that date in `<data dir>/privacy-version`, so a
//! configuration change (say a shorter retention) dates the page anew and a restart does not.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use qnp_shared::config::Config;
use qnp_shared::privacy::PrivacyFacts;
use time::OffsetDateTime;

pub struct Privacy {
    pub page: Vec<u8>,
    pub json: Vec<u8>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn today() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

/// The date this content version was first served here, recorded in the data directory; today when
/// the version is new (or nothing can be recorded, as on Lambda, whose template sets the date).
fn tracked_date(data_dir: &Path, version: &str) -> String {
    let path = data_dir.join("privacy-version");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some((seen, date)) = text.trim().split_once(' ')
        && seen == version
    {
        return date.to_owned();
    }
    let date = today();
    if std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&path, format!("{version} {date}\n")))
        .is_err()
    {
        tracing::warn!(
            path = %path.display(),
            "could not record the privacy policy's version; set QNP_PRIVACY_UPDATED"
        );
    }
    date
}

fn days(n: i64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

fn duration(secs: i64) -> String {
    if secs % 86_400 == 0 {
        days(secs / 86_400)
    } else if secs % 60 == 0 {
        format!("{} minutes", secs / 60)
    } else {
        format!("{secs} seconds")
    }
}

/// The page around a policy's body: the dashboard's header, stylesheet and footer.
fn frame(title: &str, body: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title}</title>
<link rel="icon" href="data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCAzMiAzMiI+PHJlY3Qgd2lkdGg9IjMyIiBoZWlnaHQ9IjMyIiByeD0iOCIgZmlsbD0iIzM0NTFiMiIvPjxjaXJjbGUgY3g9IjE0LjUiIGN5PSIxNC41IiByPSI3IiBmaWxsPSJub25lIiBzdHJva2U9IiNmZmYiIHN0cm9rZS13aWR0aD0iMyIvPjxwYXRoIGQ9Ik0xOC41IDE4LjUgMjQgMjQiIHN0cm9rZT0iI2ZmZiIgc3Ryb2tlLXdpZHRoPSIzIiBzdHJva2UtbGluZWNhcD0icm91bmQiLz48L3N2Zz4=">
<link rel="stylesheet" href="/assets/style.css">
</head>
<body>
<header class="site-header">
  <div class="bar">
    <a class="brand" href="/" aria-label="QNP dashboard home"><span>QNP</span></a>
  </div>
</header>
<main id="main" class="policy">
{body}
</main>
<footer class="site-footer">
  <p class="muted small"><a href="/">Dashboard</a> · <a href="/privacy.json">These facts as data</a></p>
</footer>
</body>
</html>
"##,
        title = escape(title)
    )
}

/// The generated policy, in the gateway's own words, from its facts.
pub fn render(facts: &PrivacyFacts) -> String {
    let mut b = String::new();
    let list = |b: &mut String, items: &[(String, String)]| {
        b.push_str("<ul class=\"policy-list\">\n");
        for (name, what) in items {
            let _ = writeln!(
                b,
                "  <li><strong>{}</strong>: {}</li>",
                escape(name),
                escape(what)
            );
        }
        b.push_str("</ul>\n");
    };
    let _ = writeln!(
        b,
        "<h1>Privacy</h1>\n<p class=\"muted\">Version {} · last updated {}. This page is generated from the \
         configuration this gateway runs with; when that changes, so does the page and its date.</p>",
        escape(&facts.version),
        escape(&facts.updated)
    );
    b.push_str(
        "<h2>What QNP stores</h2>\n<p>QNP is an API gateway: it forwards your calls to the model providers \
         and records what each call was, never what it said.</p>\n<h3>Your account</h3>\n",
    );
    let account: Vec<_> = facts
        .collected
        .account
        .iter()
        .map(|f| (f.name.to_owned(), f.purpose.to_owned()))
        .collect();
    list(&mut b, &account);
    b.push_str("<h3>One record per call</h3>\n");
    let usage: Vec<_> = facts
        .collected
        .usage_record
        .iter()
        .map(|f| (f.name.to_owned(), f.purpose.to_owned()))
        .collect();
    list(&mut b, &usage);
    let _ = writeln!(
        b,
        "<p>The usage CSV has these columns: <code>{}</code>.</p>\n<p><strong>Not stored:</strong> {}.</p>",
        escape(&facts.collected.csv_columns.join(",")),
        escape(facts.collected.not_stored)
    );
    let _ = writeln!(
        b,
        "<h2>How long</h2>\n<ul class=\"policy-list\">\n  <li>Usage records: deleted once older than {}.</li>\n  \
         <li>A deleted account: its sessions end and keys stop at once; everything else is erased within {}.</li>\n  \
         <li>Ids of processed Stripe events: {}.</li>\n</ul>",
        days(facts.retention.usage_days),
        days(facts.retention.deleted_account_days),
        days(facts.retention.stripe_event_days)
    );
    b.push_str(
        "<h2>Cookies</h2>\n<p>These are the only cookies QNP sets. There is no tracking and no analytics.</p>\n",
    );
    let cookies: Vec<_> = facts
        .cookies
        .iter()
        .map(|c| {
            (
                c.name.to_owned(),
                format!("{}; kept at most {}", c.purpose, duration(c.lifetime_secs)),
            )
        })
        .collect();
    list(&mut b, &cookies);
    b.push_str("<h2>Who else handles your data</h2>\n");
    let processors: Vec<_> = facts
        .processors
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                format!("{}; receives {}", p.role, p.receives),
            )
        })
        .collect();
    list(&mut b, &processors);
    b.push_str("<h2>Your rights</h2>\n");
    let rights: Vec<_> = facts
        .rights
        .iter()
        .map(|r| (r.right.to_owned(), r.how.to_owned()))
        .collect();
    list(&mut b, &rights);
    match &facts.contact {
        Some(contact) => {
            let _ = writeln!(b, "<p>Contact: <strong>{}</strong>.</p>", escape(contact));
        }
        None => {
            b.push_str("<p>Contact: the operator of this gateway has not named an address.</p>\n")
        }
    }
    frame("Privacy · QNP", &b)
}

impl Privacy {
    pub fn load(config: &Config) -> anyhow::Result<Privacy> {
        let facts =
            PrivacyFacts::from_config(config, |version| tracked_date(&config.data_dir, version));
        let json = serde_json::to_vec_pretty(&facts)?;
        let page = match &config.privacy_file {
            None => render(&facts),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("QNP_PRIVACY_FILE {}: cannot be read", path.display())
                })?;
                let is_html = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm")
                });
                if is_html {
                    text
                } else {
                    let mut body = String::new();
                    pulldown_cmark::html::push_html(&mut body, pulldown_cmark::Parser::new(&text));
                    frame("Privacy · QNP", &body)
                }
            }
        };
        Ok(Privacy {
            page: page.into_bytes(),
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_moves_only_when_the_content_does() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(tracked_date(dir.path(), "aaa"), today());
        std::fs::write(dir.path().join("privacy-version"), "aaa 2026-01-02\n").unwrap();
        assert_eq!(tracked_date(dir.path(), "aaa"), "2026-01-02");
        assert_eq!(tracked_date(dir.path(), "bbb"), today());
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
