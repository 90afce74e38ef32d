//! `SHOW CONFIG`: every setting in force, as dotted keys (`clusters.main.pool.pool_mode`)
//! with the value as the configuration file would write it.

use super::Table;
use crate::state::Topology;

pub fn table(topology: &Topology) -> Table {
    let mut t = Table::new(&["key", "value"]);
    let value = match toml::Value::try_from(&*topology.config) {
        Ok(v) => v,
        Err(e) => {
            t.push(["error".to_owned(), e.to_string()]);
            return t;
        }
    };
    let mut rows = Vec::new();
    flatten("", &value, &mut rows);
    for (key, value) in rows {
        t.push([key, value]);
    }
    t
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}
