//! Flyway's checksum of a migration file.
//!
//! This module owns the one number Flyway stores in
//! `flyway_schema_history.checksum`. It must never read files or normalise the
//! text beyond what Flyway does, or Baton and Flyway would disagree about
//! which migrations were edited.
//!
//! Flyway reads the script with a `BufferedReader`, line by line, so every
//! line terminator (LF, CRLF or a lone CR) is dropped; it removes a UTF-8 byte
//! order mark from the start of the first line only; it feeds each line's
//! UTF-8 bytes, without terminator, into one running CRC-32 (IEEE, as
//! `java.util.zip.CRC32`); and it stores the result cast to a signed 32-bit
//! integer. Feeding lines without terminators into one CRC is the same as
//! taking the CRC of the text with every CR and LF byte removed, which is what
//! [`checksum`] does. Consequences a user notices: changing only line endings
//! keeps the checksum, while adding or removing blank lines keeps it too (they
//! contribute no bytes), and any other edit, even whitespace inside a line,
//! changes it.

/// The byte order mark Flyway strips from the first line.
const BOM: char = '\u{FEFF}';

/// Flyway's checksum of a script's text, as stored in `flyway_schema_history`.
pub fn checksum(text: &str) -> i32 {
    let text = text.strip_prefix(BOM).unwrap_or(text);
    let mut hasher = crc32fast::Hasher::new();
    for line in text.split(['\r', '\n']) {
        hasher.update(line.as_bytes());
    }
    // Java's `(int) crc32.getValue()` keeps the low 32 bits as two's complement.
    hasher.finalize() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_has_checksum_zero() {
        assert_eq!(checksum(""), 0);
        assert_eq!(checksum("\n\r\n\r"), 0);
    }

    #[test]
    fn known_crc32_values() {
        // CRC-32/IEEE check value of "123456789" is 0xCBF43926.
        assert_eq!(checksum("123456789"), 0xCBF4_3926_u32 as i32);
        assert_eq!(checksum("123456789"), -873_187_034);
        assert_eq!(checksum("1234\n56789"), -873_187_034);
    }

    #[test]
    fn line_endings_do_not_matter() {
        let lf = "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n";
        let crlf = "CREATE TABLE t (id int);\r\nINSERT INTO t VALUES (1);\r\n";
        let cr = "CREATE TABLE t (id int);\rINSERT INTO t VALUES (1);\r";
        assert_eq!(checksum(lf), checksum(crlf));
        assert_eq!(checksum(lf), checksum(cr));
    }

    #[test]
    fn a_leading_bom_is_ignored_but_not_elsewhere() {
        let plain = "SELECT 1;\n";
        assert_eq!(checksum(&format!("{BOM}{plain}")), checksum(plain));
        assert_ne!(checksum(&format!("SELECT 1;\n{BOM}")), checksum(plain));
    }

    #[test]
    fn only_the_first_of_two_leading_boms_is_ignored() {
        let plain = "SELECT 1;\n";
        let one = format!("{BOM}{plain}");
        let two = format!("{BOM}{BOM}{plain}");
        assert_ne!(checksum(&two), checksum(plain));
        // The second mark is text: its three UTF-8 bytes are in the CRC.
        assert_eq!(
            checksum(&two),
            crc32fast::hash(one.trim_end().as_bytes()) as i32
        );
    }

    #[test]
    fn whitespace_inside_a_line_changes_the_checksum() {
        assert_ne!(checksum("SELECT 1;"), checksum("SELECT  1;"));
        assert_ne!(checksum("SELECT 1;"), checksum("SELECT 1; "));
    }
}
