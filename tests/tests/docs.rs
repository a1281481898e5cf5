//! The contracts in docs/ and the README are held to the code: every configuration variable the
//! gateway reads is documented, and the CSV columns are documented in their order.

fn repo_file(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The variable names `config.rs` reads: string literals in upper snake case with an underscore.
fn variables_read() -> Vec<String> {
    let source = repo_file("shared/src/config.rs");
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut names: Vec<String> = code
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3
                && s.contains('_')
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_configuration_variable_is_in_the_readme() {
    let readme = repo_file("README.md");
    let names = variables_read();
    assert!(names.len() > 30, "config.rs reads {names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in README.md's configuration table: {missing:?}"
    );
}

#[test]
fn the_csv_columns_are_documented_in_order() {
    let contracts = repo_file("docs/contracts.md");
    let line = contracts
        .split("<!-- csv-columns -->")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| !l.trim().is_empty()))
        .expect("docs/contracts.md has the CSV columns");
    assert_eq!(
        line.trim().trim_matches('`'),
        qnp_shared::usage::CSV_HEADER.join(",")
    );
}

/// Source files of the repository (code, scripts, template), not installed dependencies or build output.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".deps" | "node_modules" | ".git" | "vendor"
            ) {
                sources(&path, out);
            }
        } else if [".rs", ".sh", ".py", ".yaml", ".js", ".md"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            out.push(path);
        }
    }
}

#[test]
fn code_points_only_at_documents_in_the_repository() {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = Vec::new();
    for dir in ["shared", "functions", "tests", "benches", "docs"] {
        sources(&root.join(dir), &mut files);
    }
    files.push(root.join("README.md"));
    files.push(root.join("template.yaml"));
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // Spelled in two parts so this file does not match itself.
        for outside in ["DESIGN", "TESTING"].map(|name| format!("{name}.md")) {
            assert!(
                !text.contains(outside.as_str()),
                "{} points at {outside}, which is not in the repository",
                file.display()
            );
        }
        for (at, _) in text.match_indices("docs/") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
                .collect();
            if let Some(doc) = name
                .strip_suffix('.')
                .or(Some(&name))
                .filter(|n| n.ends_with(".md"))
            {
                assert!(
                    root.join(doc).is_file(),
                    "{} points at {doc}, which does not exist",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} references to docs/ found");
}
