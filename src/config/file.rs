//! The `--config` file: TOML, any setting by its flag name, and the
//! `[partners]` and `[merchants]` tables.

use anyhow::Context;

use super::partners;

/// Reads the configuration file: its top-level settings as text (strings
/// as they are, numbers and booleans printed, arrays joined with commas), and
/// its tables.
pub(super) fn read_file(
    path: &std::path::Path,
) -> anyhow::Result<(Vec<(String, String)>, partners::Tables)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (setting `config`)", path.display()))?;
    let mut document: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut tables = toml::Table::new();
    for name in ["partners", "merchants"] {
        if let Some(table) = document.remove(name) {
            tables.insert(name.to_owned(), table);
        }
    }
    let tables: partners::Tables = toml::Value::Table(tables)
        .try_into()
        .with_context(|| format!("{}: in [partners] or [merchants]", path.display()))?;
    let mut settings = Vec::new();
    for (name, value) in document {
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(values) => values
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(text) => Ok(text),
                    _ => anyhow::bail!("{}: `{name}`: a list of strings", path.display()),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            _ => anyhow::bail!(
                "{}: unknown setting `{name}` (tables are [partners] and [merchants])",
                path.display()
            ),
        };
        settings.push((name, text));
    }
    Ok((settings, tables))
}
