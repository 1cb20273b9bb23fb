//! The config file's keys as written, in one canonical form: what a reload diffs key by key, and
//! what the digest recorded in the journal covers (so an auditor can tell which config was in
//! force). Comments, order and layout do not count; values do.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Every key of the file by its dotted path (`limits.per_user_per_minute`, `allow[1].roles`),
/// each with its value in canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source(BTreeMap<String, String>);

impl Source {
    pub(super) fn new(table: &toml::Table) -> Self {
        let mut keys = BTreeMap::new();
        flatten("", table, &mut keys);
        Source(keys)
    }

    /// SHA-256 of the canonical form (`key=value` lines in key order), as hex.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for (key, value) in &self.0 {
            hash.update(key.as_bytes());
            hash.update(b"=");
            hash.update(value.as_bytes());
            hash.update(b"\n");
        }
        hex::encode(hash.finalize())
    }

    /// The keys whose value differs in `new` (added, removed or changed), in key order.
    pub fn changed(&self, new: &Source) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| new.0.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(new.0.keys().filter(|k| !self.0.contains_key(*k)).cloned())
            .collect();
        keys.sort();
        keys
    }

    /// Takes `key` (and every key under it) as `running` has it: a key a reload cannot change
    /// stays at its running value in the config in force.
    pub fn keep(&mut self, running: &Source, key: &str) {
        let under = |k: &str| k == key || k.starts_with(&format!("{key}."));
        self.0.retain(|k, _| !under(k));
        self.0.extend(
            running
                .0
                .iter()
                .filter(|(k, _)| under(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        value_at(path, value, out);
    }
}

fn value_at(path: String, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => flatten(&path, t, out),
        // An array of tables (`[[allow]]`): each element's keys by index.
        toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
            for (i, item) in items.iter().enumerate() {
                value_at(format!("{path}[{i}]"), item, out);
            }
        }
        leaf => {
            out.insert(path, canonical(leaf));
        }
    }
}

/// One value as text: strings quoted and escaped (JSON's rules), arrays bracketed.
fn canonical(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        toml::Value::Table(t) => format!(
            "{{{}}}",
            t.iter()
                .map(|(k, v)| format!("{k}={}", canonical(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::new(&toml::from_str(text).unwrap())
    }

    const A: &str = r#"
# a comment
[discord]
guild_ids = [1, 2]

[[allow]]
roles = [5]
instances = ["*"]

[limits]
per_user_per_minute = 3
"#;

    #[test]
    fn layout_and_comments_do_not_change_the_digest_values_do() {
        let same = "[limits]\nper_user_per_minute=3\n[discord]\nguild_ids=[1,2]\n\n[[allow]]\ninstances=[\"*\"]\nroles=[5]\n";
        assert_eq!(source(A).digest(), source(same).digest());
        assert_eq!(source(A).digest().len(), 64);
        let other = A.replace("= 3", "= 4");
        assert_ne!(source(A).digest(), source(&other).digest());
    }

    #[test]
    fn changed_lists_added_removed_and_changed_keys() {
        let new = A
            .replace("per_user_per_minute = 3", "per_instance_per_minute = 9")
            .replace("roles = [5]", "roles = [6]")
            + "\n[admin]\nlisten = \"127.0.0.1:9187\"\n";
        assert_eq!(
            source(A).changed(&source(&new)),
            [
                "admin.listen",
                "allow[0].roles",
                "limits.per_instance_per_minute",
                "limits.per_user_per_minute"
            ]
        );
        assert!(source(A).changed(&source(A)).is_empty());
    }

    #[test]
    fn a_kept_key_takes_its_running_value_or_goes_when_it_had_none() {
        let running = source(A);
        let mut new = source(&(A.replace("[1, 2]", "[1, 3]") + "\n[admin]\nlisten = \"x\"\n"));
        new.keep(&running, "discord.guild_ids");
        new.keep(&running, "admin.listen");
        assert_eq!(new, running);
    }
}
