//! Every sweep under `configs/` parses; every broken one under `configs/invalid/` fails
//! with the line, column and message its `# expect: L:C: text` header names
//! (`# expect(cli): …` for problems only the CLI can see: programs and files).

use std::fs;
use std::path::PathBuf;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn example_sweeps_parse() {
    let mut n = 0;
    for entry in fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path).unwrap();
            tessera_core::parse_sweep(&path.display().to_string(), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "expected example sweeps under configs/");
}

#[test]
fn broken_sweeps_fail_where_their_header_says() {
    let mut n = 0;
    let mut wrong = Vec::new();
    for entry in fs::read_dir(configs().join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        // `# expect(cli):` marks problems only the CLI finds (it knows programs and files).
        let (cli_only, expect) = match (
            first.strip_prefix("# expect: "),
            first.strip_prefix("# expect(cli): "),
        ) {
            (Some(e), _) => (false, e),
            (None, Some(e)) => (true, e),
            _ => panic!("{} has no `# expect:` header", path.display()),
        };
        let (pos, message) = expect.split_once(": ").unwrap();
        match tessera_core::parse_sweep("f.yaml", &text) {
            Err(e) => {
                if format!("{}:{}", e.line, e.column) != pos
                    || !e.message.contains(message)
                    || e.hint.is_empty()
                {
                    wrong.push(format!("{}: expected {expect}, got {e}", path.display()));
                }
            }
            Ok(_) => assert!(cli_only, "{} parsed", path.display()),
        }
        n += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(n >= 10);
}
