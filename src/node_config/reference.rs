//! The reference of every key and flag, generated from [`NodeSettings`] (its doc comments are
//! the flags' help), so that `docs/operating.md` cannot drift from the code.

use clap::{Args, Command};

use super::NodeSettings;

/// A Markdown table of every config-file key: its flag, its value and what it does, in the
/// order of [`NodeSettings`]. `docs/operating.md` holds this text between
/// `<!-- keys:start -->` and `<!-- keys:end -->` (a test checks it is current).
pub fn keys_reference() -> String {
    let command = NodeSettings::augment_args(Command::new("macula-relay"));
    let mut out = String::from("| key | flag | value | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str();
        let flag = arg
            .get_long()
            .map(|l| format!("`--{l}`"))
            .unwrap_or_default();
        let switch = arg.get_num_args().is_some_and(|n| n.max_values() == 0);
        let value = arg
            .get_value_names()
            .filter(|_| !switch)
            .map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "true / false".into());
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        out.push_str(&format!("| `{key}` | {flag} | {value} | {help} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    /// The reference in `docs/operating.md` is the generated one. With
    /// `MACULA_UPDATE_DOCS=1` the test rewrites it instead.
    #[test]
    fn operating_md_lists_every_key_as_the_code_defines_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md");
        let text = std::fs::read_to_string(path).expect("docs/operating.md");
        let (start, end) = ("<!-- keys:start -->\n", "<!-- keys:end -->");
        let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
            panic!("docs/operating.md has no {start:?} ... {end:?} section");
        };
        let current = &text[a + start.len()..b];
        let generated = super::keys_reference();
        if current == generated {
            return;
        }
        if std::env::var_os("MACULA_UPDATE_DOCS").is_some() {
            let updated = format!("{}{generated}{}", &text[..a + start.len()], &text[b..]);
            std::fs::write(path, updated).expect("write docs/operating.md");
            return;
        }
        panic!(
            "docs/operating.md's key reference is out of date: run \
             `MACULA_UPDATE_DOCS=1 cargo test --lib operating_md` and commit the result"
        );
    }
}
