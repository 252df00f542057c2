//! The metadata key layout, identical to TiCDC's so that its tools (and operators' habits, like
//! `etcdctl get --prefix /tidb/cdc/`) keep working against a Tidal cluster:
//!
//! ```text
//! /tidb/cdc/<cluster>/<keyspace>/changefeed/info/<id>     ChangeFeedInfo JSON
//! /tidb/cdc/<cluster>/<keyspace>/changefeed/status/<id>   ChangeFeedStatus JSON
//! /tidb/cdc/<cluster>/<keyspace>/upstream/<id>            upstream info
//! /tidb/cdc/<cluster>/__cdc_meta__/owner/<lease hex>      coordinator election
//! /tidb/cdc/<cluster>/__cdc_meta__/capture/<capture id>   node info (lease-bound)
//! /tidb/cdc/<cluster>/__cdc_meta__/meta/meta-version      metadata version
//! /tidb/cdc/<cluster>/__cdc_meta__/assignment/<keyspace>/<id>
//!                                                         Tidal only: which processes run a
//!                                                         changefeed's current generation
//! ```
//!
//! The cluster id doubles as the isolation unit: everything of one cluster lives under
//! [`KeyLayout::cluster_prefix`].

use super::store::{LeaseId, MetaError};

/// The root of all TiCDC-compatible keys.
pub const KEY_ROOT: &str = "/tidb/cdc";
/// Default cluster id.
pub const DEFAULT_CLUSTER: &str = "default";
/// Default keyspace.
pub const DEFAULT_KEYSPACE: &str = "default";
/// The pseudo-keyspace that holds cluster-wide keys.
pub const META_SEGMENT: &str = "__cdc_meta__";
/// Maximum changefeed id length (TiCDC `ValidateChangefeedID`).
pub const MAX_CHANGEFEED_ID_LEN: usize = 128;

/// Checks a changefeed id against TiCDC's rule: `^[a-zA-Z0-9]+(\-[a-zA-Z0-9]+)*$`, at most 128
/// characters — ASCII letters and digits in groups separated by single dashes.
pub fn validate_changefeed_id(id: &str) -> Result<(), MetaError> {
    let bad =
        |why: &str| MetaError::InvalidArgument(format!("invalid changefeed_id: {id:?}: {why}"));
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id.len() > MAX_CHANGEFEED_ID_LEN {
        return Err(bad("longer than 128 characters"));
    }
    let mut prev_dash = true; // no leading dash
    for c in id.chars() {
        if c == '-' {
            if prev_dash {
                return Err(bad("dashes must separate letters or digits"));
            }
            prev_dash = true;
        } else if c.is_ascii_alphanumeric() {
            prev_dash = false;
        } else {
            return Err(bad("only ASCII letters, digits and '-' are allowed"));
        }
    }
    if prev_dash {
        return Err(bad("dashes must separate letters or digits"));
    }
    Ok(())
}

/// A path segment chosen by users (cluster, keyspace, capture id) must be non-empty and free of
/// `/` so keys parse back unambiguously.
fn validate_segment(what: &str, s: &str) -> Result<(), MetaError> {
    if s.is_empty() || s.contains('/') {
        return Err(MetaError::InvalidArgument(format!(
            "invalid {what} {s:?}: must be non-empty and contain no '/'"
        )));
    }
    Ok(())
}

/// A changefeed's full name: keyspace + id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangefeedRef {
    /// Keyspace ("default" in the classic kernel).
    pub keyspace: String,
    /// Changefeed id (validated).
    pub id: String,
}

impl ChangefeedRef {
    /// A changefeed in the default keyspace; validates the id.
    pub fn new(id: &str) -> Result<Self, MetaError> {
        Self::in_keyspace(DEFAULT_KEYSPACE, id)
    }

    /// A changefeed in `keyspace`; validates both.
    pub fn in_keyspace(keyspace: &str, id: &str) -> Result<Self, MetaError> {
        validate_segment("keyspace", keyspace)?;
        if keyspace == META_SEGMENT {
            return Err(MetaError::InvalidArgument(format!(
                "keyspace {META_SEGMENT} is reserved"
            )));
        }
        validate_changefeed_id(id)?;
        Ok(ChangefeedRef {
            keyspace: keyspace.to_string(),
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for ChangefeedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.keyspace, self.id)
    }
}

/// A key parsed back by [`KeyLayout::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    /// `…/<keyspace>/changefeed/info/<id>`
    ChangefeedInfo(ChangefeedRef),
    /// `…/<keyspace>/changefeed/status/<id>`
    ChangefeedStatus(ChangefeedRef),
    /// `…/<keyspace>/upstream/<id>`
    Upstream {
        /// Keyspace.
        keyspace: String,
        /// Upstream id.
        upstream_id: String,
    },
    /// `…/__cdc_meta__/owner/<lease hex>`
    Owner {
        /// The lease id parsed from hex.
        lease: LeaseId,
    },
    /// `…/__cdc_meta__/capture/<capture id>`
    Capture {
        /// The capture id.
        capture_id: String,
    },
    /// `…/__cdc_meta__/meta/meta-version`
    MetaVersion,
}

/// Builds and parses the keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    cluster: String,
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout {
            cluster: DEFAULT_CLUSTER.to_string(),
            prefix: format!("{KEY_ROOT}/{DEFAULT_CLUSTER}"),
        }
    }
}

impl KeyLayout {
    /// The layout of cluster `cluster`.
    pub fn new(cluster: &str) -> Result<Self, MetaError> {
        validate_segment("cluster id", cluster)?;
        Ok(KeyLayout {
            cluster: cluster.to_string(),
            prefix: format!("{KEY_ROOT}/{cluster}"),
        })
    }

    /// The cluster id.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `/tidb/cdc/<cluster>` — every key of the cluster starts with this plus `/`.
    pub fn cluster_prefix(&self) -> &str {
        &self.prefix
    }

    /// `…/<keyspace>/changefeed/info/<id>`
    pub fn changefeed_info(&self, cf: &ChangefeedRef) -> String {
        format!("{}{}", self.changefeed_info_prefix(&cf.keyspace), cf.id)
    }

    /// `…/<keyspace>/changefeed/status/<id>`
    pub fn changefeed_status(&self, cf: &ChangefeedRef) -> String {
        format!("{}{}", self.changefeed_status_prefix(&cf.keyspace), cf.id)
    }

    /// `…/<keyspace>/changefeed/info/` (for listing).
    pub fn changefeed_info_prefix(&self, keyspace: &str) -> String {
        format!("{}/{keyspace}/changefeed/info/", self.prefix)
    }

    /// `…/<keyspace>/changefeed/status/` (for listing).
    pub fn changefeed_status_prefix(&self, keyspace: &str) -> String {
        format!("{}/{keyspace}/changefeed/status/", self.prefix)
    }

    /// `…/<keyspace>/upstream/<id>`
    pub fn upstream(&self, keyspace: &str, upstream_id: u64) -> String {
        format!("{}/{keyspace}/upstream/{upstream_id}", self.prefix)
    }

    /// `…/__cdc_meta__/owner/` (election prefix).
    pub fn owner_prefix(&self) -> String {
        format!("{}/{META_SEGMENT}/owner/", self.prefix)
    }

    /// `…/__cdc_meta__/owner/<lease in lowercase hex>`
    pub fn owner(&self, lease: LeaseId) -> String {
        format!("{}{lease:x}", self.owner_prefix())
    }

    /// `…/__cdc_meta__/capture/`
    pub fn capture_prefix(&self) -> String {
        format!("{}/{META_SEGMENT}/capture/", self.prefix)
    }

    /// `…/__cdc_meta__/capture/<capture id>`
    pub fn capture(&self, capture_id: &str) -> Result<String, MetaError> {
        validate_segment("capture id", capture_id)?;
        Ok(format!("{}{capture_id}", self.capture_prefix()))
    }

    /// `…/__cdc_meta__/assignment/` (Tidal's multi-process run assignments; TiCDC has no
    /// such key).
    pub fn assignment_prefix(&self) -> String {
        format!("{}/{META_SEGMENT}/assignment/", self.prefix)
    }

    /// `…/__cdc_meta__/assignment/<keyspace>/<id>`: the processes, epoch and ports of the
    /// changefeed's current multi-process run.
    pub fn assignment(&self, cf: &ChangefeedRef) -> String {
        format!("{}{}/{}", self.assignment_prefix(), cf.keyspace, cf.id)
    }

    /// `…/__cdc_meta__/meta/meta-version`
    pub fn meta_version(&self) -> String {
        format!("{}/{META_SEGMENT}/meta/meta-version", self.prefix)
    }

    /// Parses a key of this cluster; `None` for keys of other clusters or unknown shapes.
    pub fn parse(&self, key: &str) -> Option<ParsedKey> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [META_SEGMENT, "owner", lease] => {
                if lease.is_empty() {
                    return None;
                }
                let lease = u64::from_str_radix(lease, 16).ok()?;
                Some(ParsedKey::Owner {
                    lease: lease as LeaseId,
                })
            }
            [META_SEGMENT, "capture", id] if !id.is_empty() => Some(ParsedKey::Capture {
                capture_id: (*id).to_string(),
            }),
            [META_SEGMENT, "meta", "meta-version"] => Some(ParsedKey::MetaVersion),
            [META_SEGMENT, ..] => None,
            [keyspace, "changefeed", "info", id] => ChangefeedRef::in_keyspace(keyspace, id)
                .ok()
                .map(ParsedKey::ChangefeedInfo),
            [keyspace, "changefeed", "status", id] => ChangefeedRef::in_keyspace(keyspace, id)
                .ok()
                .map(ParsedKey::ChangefeedStatus),
            [keyspace, "upstream", id] if !keyspace.is_empty() && !id.is_empty() => {
                Some(ParsedKey::Upstream {
                    keyspace: (*keyspace).to_string(),
                    upstream_id: (*id).to_string(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_key_strings() {
        let k = KeyLayout::default();
        let cf = ChangefeedRef::new("test-1").unwrap();
        assert_eq!(
            k.changefeed_info(&cf),
            "/tidb/cdc/default/default/changefeed/info/test-1"
        );
        assert_eq!(
            k.changefeed_status(&cf),
            "/tidb/cdc/default/default/changefeed/status/test-1"
        );
        assert_eq!(
            k.owner(0x22b0_86d3_9f1c_4e05),
            "/tidb/cdc/default/__cdc_meta__/owner/22b086d39f1c4e05"
        );
        assert_eq!(
            k.capture("6f1a-c").unwrap(),
            "/tidb/cdc/default/__cdc_meta__/capture/6f1a-c"
        );
        assert_eq!(
            k.meta_version(),
            "/tidb/cdc/default/__cdc_meta__/meta/meta-version"
        );
        assert_eq!(
            k.upstream("default", 7),
            "/tidb/cdc/default/default/upstream/7"
        );
        assert_eq!(
            k.assignment(&cf),
            "/tidb/cdc/default/__cdc_meta__/assignment/default/test-1"
        );
        assert_eq!(k.parse(&k.assignment(&cf)), None);
        let k2 = KeyLayout::new("c2").unwrap();
        let cf2 = ChangefeedRef::in_keyspace("ks1", "a").unwrap();
        assert_eq!(
            k2.changefeed_info(&cf2),
            "/tidb/cdc/c2/ks1/changefeed/info/a"
        );
    }

    #[test]
    fn parse_back() {
        let k = KeyLayout::new("c1").unwrap();
        let cf = ChangefeedRef::in_keyspace("ks", "feed-9").unwrap();
        assert_eq!(
            k.parse(&k.changefeed_info(&cf)),
            Some(ParsedKey::ChangefeedInfo(cf.clone()))
        );
        assert_eq!(
            k.parse(&k.changefeed_status(&cf)),
            Some(ParsedKey::ChangefeedStatus(cf.clone()))
        );
        assert_eq!(
            k.parse(&k.owner(0xabc)),
            Some(ParsedKey::Owner { lease: 0xabc })
        );
        assert_eq!(
            k.parse(&k.capture("cap").unwrap()),
            Some(ParsedKey::Capture {
                capture_id: "cap".into()
            })
        );
        assert_eq!(k.parse(&k.meta_version()), Some(ParsedKey::MetaVersion));
        // other cluster, prefix-of-cluster-name, unknown shapes
        assert_eq!(k.parse("/tidb/cdc/c2/ks/changefeed/info/x"), None);
        assert_eq!(k.parse("/tidb/cdc/c10/ks/changefeed/info/x"), None);
        assert_eq!(k.parse("/tidb/cdc/c1/ks/changefeed/info/bad_id"), None);
        assert_eq!(k.parse("/tidb/cdc/c1/__cdc_meta__/owner/zz"), None);
        assert_eq!(k.parse("/tidb/cdc/c1/ks/changefeed/info/a/b"), None);
    }

    #[test]
    fn changefeed_id_rule() {
        for ok in ["a", "A1", "test-1", "a-b-c", "0"] {
            assert!(validate_changefeed_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "a_b", "a.b", "a b", "é", "a/b"] {
            assert!(validate_changefeed_id(bad).is_err(), "{bad}");
        }
        assert!(validate_changefeed_id(&"a".repeat(128)).is_ok());
        assert!(validate_changefeed_id(&"a".repeat(129)).is_err());
        assert!(KeyLayout::new("a/b").is_err());
        assert!(ChangefeedRef::in_keyspace("__cdc_meta__", "x").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let k = KeyLayout::default();
            let _ = k.parse(&s);
            let _ = k.parse(&format!("/tidb/cdc/default/{s}"));
        }

        #[test]
        fn valid_ids_round_trip(id in "[a-zA-Z0-9]{1,10}(-[a-zA-Z0-9]{1,10}){0,5}") {
            let k = KeyLayout::default();
            let cf = ChangefeedRef::new(&id).unwrap();
            prop_assert_eq!(k.parse(&k.changefeed_info(&cf)), Some(ParsedKey::ChangefeedInfo(cf)));
        }
    }
}
