//! What the harness reads from the nodes over the kit's [`LineClient`]
//! (used by the workload threads, the monitor, the nemesis and the final
//! reads): a node's whole contents, and fields of its `INFO`.
//!
//! Replies come off the network, so nothing here unwraps them.

use std::collections::BTreeMap;
use std::io;

use keyval_testkit::LineClient;

/// Every key and its value (`KEYS`, then `GET` each).
///
/// # Errors
/// As [`LineClient::list`] and [`LineClient::call`].
pub fn contents(client: &mut LineClient) -> io::Result<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    for key in client.list("KEYS")? {
        let value = client.call(&format!("GET {key}"))?;
        data.insert(key, value);
    }
    Ok(data)
}

/// The value of `field` in INFO pairs.
pub fn field<'a>(info: &'a [(String, String)], field: &str) -> Option<&'a str> {
    info.iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.as_str())
}

/// `lag=<n>` out of a leader's `follower_<id>` INFO value, or `None` if
/// absent or while the follower has acknowledged nothing (it is taking a
/// snapshot, and its lag is the whole history).
pub fn follower_lag(value: &str) -> Option<u64> {
    let number = |name: &str| {
        value
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .and_then(|n| n.parse::<u64>().ok())
    };
    number("acked=").filter(|&acked| acked > 0)?;
    number("lag=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = vec![
            ("role".to_string(), "leader".to_string()),
            (
                "follower_2".to_string(),
                "addr=127.0.0.1:4000 acked=7 lag=3".to_string(),
            ),
        ];
        assert_eq!(field(&info, "role"), Some("leader"));
        assert_eq!(field(&info, "seq"), None);
        assert_eq!(
            follower_lag(field(&info, "follower_2").unwrap_or("")),
            Some(3)
        );
        assert_eq!(follower_lag("addr=x acked=1"), None);
        assert_eq!(follower_lag("addr=x acked=0 lag=9"), None);
    }
}
