//! What the catalog answers from: each region's last good list of one product's instances, and
//! a lock-free snapshot of all of them for search, exact names and lookups by ID.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::instance::{Instance, MAX_NAME_CHARS};
use crate::ids::{InstanceId, Product, Region};
use crate::text::{clean, is_invisible};

/// What an exact name resolves to among the instances an actor may open.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    Unique(&'a Instance),
    /// Several carry the name: list them (ID, region, state) so the member can pick.
    Ambiguous(Vec<&'a Instance>),
    NotFound,
}

/// One region's last good list of one product's instances.
pub struct RegionList {
    pub region: Region,
    pub product: Product,
    pub instances: Arc<[Instance]>,
    index: HashMap<InstanceId, u32>,
    /// When this list was fetched; `None` until the first success.
    pub fetched_at: Option<SystemTime>,
    pub(super) fetched: Option<Instant>,
}

impl RegionList {
    pub(super) fn empty(region: Region, product: Product) -> Self {
        Self {
            region,
            product,
            instances: Arc::from(Vec::new()),
            index: HashMap::new(),
            fetched_at: None,
            fetched: None,
        }
    }

    pub(super) fn new(region: Region, product: Product, instances: Vec<Instance>) -> Self {
        let index = instances
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id.clone(), n as u32))
            .collect();
        Self {
            region,
            product,
            instances: instances.into(),
            index,
            fetched_at: Some(SystemTime::now()),
            fetched: Some(Instant::now()),
        }
    }

    /// How old the list is; `None` when no refresh has succeeded yet.
    pub fn age(&self) -> Option<Duration> {
        self.fetched.map(|t| t.elapsed())
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Instance> {
        self.index.get(id).map(|n| &self.instances[*n as usize])
    }
}

/// A consistent, cheap snapshot of every region's list, to answer from without locks.
#[derive(Clone)]
pub struct View {
    pub(super) lists: Vec<Arc<RegionList>>,
}

impl View {
    pub fn regions(&self) -> impl Iterator<Item = &RegionList> {
        self.lists.iter().map(|l| &**l)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.lists.iter().flat_map(|l| l.instances.iter())
    }

    pub fn len(&self) -> usize {
        self.lists.iter().map(|l| l.instances.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The instance with this ID, in whichever region it is (IDs are unique across regions).
    pub fn lookup(&self, id: &InstanceId) -> Option<&Instance> {
        self.lists.iter().find_map(|l| l.get(id))
    }

    /// Up to `limit` instances `allowed` admits whose ID, name, IPs or tag values contain
    /// `query`, case-insensitively; exact matches first, then prefixes, then substrings, each
    /// by name then ID. An empty query lists every allowed instance by name.
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        allowed: impl Fn(&Instance) -> bool,
    ) -> Vec<&Instance> {
        let query: String = query
            .chars()
            .filter(|c| !is_invisible(*c))
            .take(MAX_NAME_CHARS)
            .collect::<String>()
            .trim()
            .to_lowercase();
        let mut hits: Vec<(u8, &Instance)> = self
            .instances()
            .filter_map(|i| {
                let rank = if query.is_empty() {
                    Some(1)
                } else {
                    i.rank(&query)
                };
                rank.map(|r| (r, i))
            })
            .filter(|(_, i)| allowed(i))
            .collect();
        let order = |a: &(u8, &Instance), b: &(u8, &Instance)| {
            (a.0, &a.1.name, &a.1.id).cmp(&(b.0, &b.1.name, &b.1.id))
        };
        if limit == 0 {
            return Vec::new();
        }
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, order);
            hits.truncate(limit);
        }
        hits.sort_unstable_by(order);
        hits.into_iter().map(|(_, i)| i).collect()
    }

    /// The instances `allowed` admits whose name is exactly `name` (after the same cleaning the
    /// catalog applies to names; case-sensitive, as Tencent's names are).
    pub fn resolve_name(&self, name: &str, allowed: impl Fn(&Instance) -> bool) -> Resolution<'_> {
        let name = clean(name, MAX_NAME_CHARS);
        if name.is_empty() {
            return Resolution::NotFound;
        }
        let mut found: Vec<&Instance> = self
            .instances()
            .filter(|i| i.name == name && allowed(i))
            .collect();
        match found.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Unique(found.remove(0)),
            _ => {
                found.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
                Resolution::Ambiguous(found)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tencent::instance::tests::inst;

    fn view(instances: Vec<Instance>) -> View {
        View {
            lists: vec![Arc::new(RegionList::new(
                Region::parse("ap-guangzhou").unwrap(),
                Product::Cvm,
                instances,
            ))],
        }
    }

    fn ids(v: &[&Instance]) -> Vec<String> {
        v.iter().map(|i| i.id.to_string()).collect()
    }

    #[test]
    fn search_ranks_exact_then_prefix_then_substring() {
        let v = view(vec![
            inst("ins-aaaaaaa1", "my-web", "RUNNING", "10.0.0.1", &[]),
            inst("ins-aaaaaaa2", "web-01", "RUNNING", "10.0.0.2", &[]),
            inst("ins-aaaaaaa3", "WEB", "STOPPED", "10.0.0.3", &[]),
            inst(
                "ins-aaaaaaa4",
                "db",
                "RUNNING",
                "10.0.0.4",
                &[("role", "Web")],
            ),
            inst("ins-aaaaaaa5", "cache", "RUNNING", "10.0.0.5", &[]),
        ]);
        let all = |_: &Instance| true;
        assert_eq!(
            ids(&v.search("web", 25, all)),
            // Exact (case-insensitive): "WEB" and the tag value "Web", by name; then the prefix
            // "web-01"; then the substring "my-web".
            vec![
                "ins-aaaaaaa3",
                "ins-aaaaaaa4",
                "ins-aaaaaaa2",
                "ins-aaaaaaa1"
            ]
        );
        assert_eq!(ids(&v.search("10.0.0.5", 25, all)), vec!["ins-aaaaaaa5"]);
        assert_eq!(
            ids(&v.search("INS-AAAAAAA2", 25, all)),
            vec!["ins-aaaaaaa2"]
        );
        assert_eq!(v.search("10.0.0.", 25, all).len(), 5);
        assert_eq!(v.search("nothing", 25, all).len(), 0);
        // The filter decides what may be seen at all, and the limit holds.
        assert_eq!(
            ids(&v.search("web", 25, |i| i.state.can_serve_console())),
            vec!["ins-aaaaaaa4", "ins-aaaaaaa2", "ins-aaaaaaa1"]
        );
        assert_eq!(
            ids(&v.search("web", 2, all)),
            vec!["ins-aaaaaaa3", "ins-aaaaaaa4"]
        );
        assert!(v.search("", 25, |_| false).is_empty());
        assert_eq!(v.search("", 3, all).len(), 3);
    }

    #[test]
    fn names_resolve_only_among_allowed_instances() {
        let v = view(vec![
            inst("ins-aaaaaaa1", "web-01", "RUNNING", "10.0.0.1", &[]),
            inst("ins-aaaaaaa2", "web-01", "RUNNING", "10.0.0.2", &[]),
            inst("ins-aaaaaaa3", "db", "RUNNING", "10.0.0.3", &[]),
        ]);
        let all = |_: &Instance| true;
        assert!(matches!(v.resolve_name("web-01", all), Resolution::Ambiguous(v) if v.len() == 2));
        assert!(matches!(
            v.resolve_name("web-01", |i| i.id.as_str() == "ins-aaaaaaa2"),
            Resolution::Unique(i) if i.id.as_str() == "ins-aaaaaaa2"
        ));
        assert_eq!(v.resolve_name("db", |_| false), Resolution::NotFound);
        assert_eq!(v.resolve_name("WEB-01", all), Resolution::NotFound);
        assert_eq!(v.resolve_name("", all), Resolution::NotFound);
        assert!(matches!(v.resolve_name(" db ", all), Resolution::Unique(_)));
        let id = InstanceId::parse("ins-aaaaaaa3").unwrap();
        assert_eq!(v.lookup(&id).unwrap().name, "db");
    }
}
