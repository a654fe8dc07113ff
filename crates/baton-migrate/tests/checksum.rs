//! Flyway's checksum, checked against an independent implementation in
//! Python (`zlib.crc32`) over real files, and against fixed values.

mod common;

use std::path::Path;
use std::process::Command;

use baton_migrate::{checksum, discover};
use common::Scratch;

/// Flyway's algorithm written independently in Python: decode UTF-8, drop
/// one leading BOM (Flyway's `BomFilter` on the first line: a second one is
/// text), split on CRLF/CR/LF, CRC-32 the lines, sign the result.
const PYTHON: &str = r#"
import re, sys, zlib
text = open(sys.argv[1], 'rb').read().decode('utf-8')
if text.startswith('\ufeff'):
    text = text[1:]
crc = 0
for line in re.split(r'\r\n|\r|\n', text):
    crc = zlib.crc32(line.encode('utf-8'), crc)
print(crc - (1 << 32) if crc >= (1 << 31) else crc)
"#;

fn python_checksum(path: &Path) -> i32 {
    let output = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(path)
        .output()
        .expect("python3 must be installed to cross-check checksums");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("python printed an integer")
}

const BODY: [&str; 4] = [
    "-- Users of the shop",
    "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);",
    "",
    "INSERT INTO users VALUES (1, 'Zoë ☃');",
];

#[test]
fn files_with_any_line_ending_or_a_bom_match_python_and_each_other() {
    let scratch = Scratch::new("checksum");
    let variants = [
        ("V1__lf.sql", format!("{}\n", BODY.join("\n"))),
        ("V2__crlf.sql", format!("{}\r\n", BODY.join("\r\n"))),
        ("V3__cr.sql", BODY.join("\r")),
        ("V4__bom.sql", format!("\u{FEFF}{}\n", BODY.join("\n"))),
        (
            "V5__bom_crlf.sql",
            format!("\u{FEFF}{}\r\n", BODY.join("\r\n")),
        ),
        (
            "V6__mixed.sql",
            format!("{}\r\n{}\n{}\r{}", BODY[0], BODY[1], BODY[2], BODY[3]),
        ),
    ];
    for (name, text) in &variants {
        let path = scratch.write(name, text);
        assert_eq!(checksum(text), python_checksum(&path), "{name}");
    }
    let discovered = discover(scratch.dir()).expect("valid folder");
    let sums: Vec<i32> = discovered.migrations.iter().map(|m| m.checksum).collect();
    assert_eq!(sums.len(), variants.len());
    assert!(
        sums.windows(2).all(|w| w[0] == w[1]),
        "line endings and BOM must not matter: {sums:?}"
    );
}

#[test]
fn a_file_starting_with_two_byte_order_marks_keeps_the_second_as_flyway_does() {
    let scratch = Scratch::new("checksum-two-boms");
    let one = format!("\u{FEFF}{}\n", BODY.join("\n"));
    let two = format!("\u{FEFF}\u{FEFF}{}\n", BODY.join("\n"));
    scratch.write("V1__one.sql", &one);
    let path = scratch.write("V2__two.sql", &two);
    let discovered = discover(scratch.dir()).expect("valid folder");
    let [first, second] = &discovered.migrations[..] else {
        panic!("two migrations expected");
    };
    assert_eq!(second.checksum, python_checksum(&path));
    assert_ne!(
        second.checksum, first.checksum,
        "the second BOM is SQL text"
    );
    // What runs keeps the second mark too: only one is dropped.
    assert!(second.sql.starts_with('\u{FEFF}'));
    assert!(!first.sql.starts_with('\u{FEFF}'));
}

#[test]
fn an_edited_file_gets_a_different_checksum_that_python_agrees_with() {
    let scratch = Scratch::new("checksum-edit");
    let before = scratch.write("V1__a.sql", "SELECT 1;\n");
    let after = scratch.write("V2__a.sql", "SELECT 1 ;\n");
    assert_eq!(checksum("SELECT 1;\n"), python_checksum(&before));
    assert_eq!(checksum("SELECT 1 ;\n"), python_checksum(&after));
    assert_ne!(python_checksum(&before), python_checksum(&after));
}

#[test]
fn fixed_values() {
    assert_eq!(
        checksum("CREATE TABLE users (id bigint PRIMARY KEY);\n"),
        1_812_668_543
    );
    assert_eq!(checksum("SELECT 1;"), 78_787_420);
    assert_eq!(checksum("INSERT INTO t VALUES ('été');\n"), -428_703_129);
    // The CRC-32 check value, stored signed as Java's `(int)` cast does.
    assert_eq!(checksum("123456789"), -873_187_034);
}
