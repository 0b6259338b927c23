//! The leader lease on etcd v3: one etcd lease per member (TTL), which carries the member's
//! state record and, while it leads, the leader record. The leader record is created with a
//! transaction that succeeds only if it does not exist; it disappears when its lease expires
//! (etcd's own clock, counting from the keepalive it received) or is released.
//!
//! Keys, under `PREFIX/CLUSTER/`: `leader` (holder's name), `members/NAME` (JSON
//! `MemberState`), `sync` (JSON `SyncState`, written only by the holder), `switchover` (the
//! member a planned switchover hands the lease to, written only by the holder), `initialize`
//! (the system identifier, created once).

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use tokio::sync::Mutex;

use super::{
    ClusterView, Coordination, CoordinationError, MemberState, Published, Renewal, SyncState,
};

/// Where a cluster's records live in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdLocation {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Key prefix (without trailing slash).
    pub prefix: String,
}

impl EtcdLocation {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    pub fn parse(url: &str) -> Result<EtcdLocation, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url}: an etcd URL starts with etcd://"))?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "walarch"));
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{url}: no etcd endpoint (etcd://HOST:PORT/PREFIX)"));
        }
        let prefix = prefix.trim_matches('/');
        Ok(EtcdLocation {
            endpoints,
            prefix: if prefix.is_empty() {
                "walarch".to_owned()
            } else {
                prefix.to_owned()
            },
        })
    }
}

/// One member's handle on the cluster's records in etcd.
pub struct EtcdCoordination {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// Connected on first use and kept (the channel reconnects by itself).
    client: Mutex<Option<Client>>,
    member: String,
    root: String,
    ttl: Duration,
    /// Every call is bounded: a partitioned member must learn it in time to fence.
    call_timeout: Duration,
    /// The member's etcd lease, granted on first use and again after it expired.
    lease: Mutex<Option<i64>>,
}

impl EtcdCoordination {
    /// A handle that connects on first use (a store that is down now is retried by every call).
    pub fn new(
        location: &EtcdLocation,
        cluster: &str,
        member: &str,
        ttl: Duration,
        call_timeout: Duration,
    ) -> EtcdCoordination {
        let options = ConnectOptions::new()
            .with_connect_timeout(call_timeout)
            .with_timeout(call_timeout)
            .with_keep_alive(call_timeout, call_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let endpoints: Vec<String> = location
            .endpoints
            .iter()
            .map(|e| format!("http://{e}"))
            .collect();
        EtcdCoordination {
            endpoints,
            options,
            client: Mutex::new(None),
            member: member.to_owned(),
            root: format!("/{}/{}/", location.prefix, cluster),
            ttl,
            call_timeout,
            lease: Mutex::new(None),
        }
    }

    /// The client, connecting first if this is the first call (or the last connect failed).
    async fn client(&self) -> Result<Client, CoordinationError> {
        let mut client = self.client.lock().await;
        if let Some(c) = &*client {
            return Ok(c.clone());
        }
        let connected = self
            .bounded(
                "connecting to etcd",
                Client::connect(self.endpoints.clone(), Some(self.options.clone())),
            )
            .await?;
        *client = Some(connected.clone());
        Ok(connected)
    }

    /// Runs `op` in a transaction that succeeds only while this member holds the leader key
    /// (and every one of `also` holds): the records only the leader may write.
    async fn as_holder<const N: usize>(
        &self,
        what: &str,
        also: [Compare; N],
        op: TxnOp,
    ) -> Result<bool, CoordinationError> {
        let leader = self.key("leader");
        let mut compares = vec![Compare::value(
            leader.as_bytes(),
            CompareOp::Equal,
            self.member.as_bytes(),
        )];
        compares.extend(also);
        let txn = Txn::new().when(compares).and_then([op]);
        let mut client = self.client().await?;
        Ok(self.bounded(what, client.txn(txn)).await?.succeeded())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordinationError> {
        super::bounded(self.call_timeout, what, call).await
    }

    /// The member's lease, granted now if it has none.
    async fn lease_id(&self) -> Result<i64, CoordinationError> {
        let mut lease = self.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        // Rounded up: etcd counts whole seconds, and a lease shorter than the configured TTL
        // could expire before the holder's renew deadline.
        let ttl_secs = self.ttl.as_secs_f64().ceil().max(1.0) as i64;
        let mut client = self.client().await?;
        let granted = self
            .bounded("granting a lease", client.lease_grant(ttl_secs, None))
            .await?;
        *lease = Some(granted.id());
        Ok(granted.id())
    }
}

impl std::fmt::Debug for EtcdCoordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordination")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl Coordination for EtcdCoordination {
    async fn view(&self) -> Result<ClusterView, CoordinationError> {
        let mut client = self.client().await?;
        let response = self
            .bounded(
                "reading the cluster",
                client.get(self.root.as_bytes(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut view = ClusterView {
            revision: response.header().map_or(0, |h| h.revision()),
            ..ClusterView::default()
        };
        for kv in response.kvs() {
            let key = kv
                .key_str()
                .map_err(|e| CoordinationError::Invalid(e.to_string()))?;
            let Some(rest) = key.strip_prefix(&self.root) else {
                continue;
            };
            let value = kv.value();
            match rest {
                "leader" => view.leader = Some(String::from_utf8_lossy(value).into_owned()),
                "initialize" => {
                    view.initialized = Some(String::from_utf8_lossy(value).into_owned())
                }
                "switchover" => view.switchover = Some(String::from_utf8_lossy(value).into_owned()),
                "sync" => {
                    view.sync = Some(
                        serde_json::from_slice::<SyncState>(value)
                            .map_err(|e| CoordinationError::Invalid(format!("{key}: {e}")))?,
                    )
                }
                _ if rest.starts_with("members/") => {
                    // A record another version cannot read is skipped, not fatal: the member
                    // is then simply not visible (which never makes anyone promote).
                    if let Ok(state) = serde_json::from_slice::<MemberState>(value) {
                        view.members.push(Published {
                            state,
                            revision: kv.mod_revision(),
                        });
                    }
                }
                _ => {}
            }
        }
        view.members.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        Ok(view)
    }

    async fn acquire(&self) -> Result<bool, CoordinationError> {
        let lease = self.lease_id().await?;
        let leader = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader.as_bytes(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                leader.as_bytes(),
                self.member.as_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut client = self.client().await?;
        let response = self
            .bounded("acquiring the leader lease", client.txn(txn))
            .await?;
        Ok(response.succeeded())
    }

    async fn renew(&self) -> Result<Renewal, CoordinationError> {
        let lease = self.lease_id().await?;
        let mut client = self.client().await?;
        let ttl = self
            .bounded("renewing the lease", async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            })
            .await?;
        if ttl > 0 {
            Ok(Renewal::Renewed)
        } else {
            // Forget only the lease that expired: a late answer must not wipe a newer one.
            let mut current = self.lease.lock().await;
            if *current == Some(lease) {
                *current = None;
            }
            Ok(Renewal::Lost)
        }
    }

    async fn release(&self) -> Result<(), CoordinationError> {
        let leader = self.key("leader");
        self.as_holder(
            "releasing the leader lease",
            [],
            TxnOp::delete(leader.as_bytes(), None),
        )
        .await?;
        Ok(())
    }

    async fn publish(&self, state: &MemberState) -> Result<(), CoordinationError> {
        let lease = self.lease_id().await?;
        let value =
            serde_json::to_vec(state).map_err(|e| CoordinationError::Invalid(e.to_string()))?;
        let mut client = self.client().await?;
        self.bounded(
            "publishing the member's state",
            client.put(
                self.key(&format!("members/{}", self.member)),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        Ok(())
    }

    async fn set_sync(&self, sync: &SyncState) -> Result<bool, CoordinationError> {
        let value =
            serde_json::to_vec(sync).map_err(|e| CoordinationError::Invalid(e.to_string()))?;
        self.as_holder(
            "writing the synchronous set",
            [],
            TxnOp::put(self.key("sync"), value, None),
        )
        .await
    }

    async fn request_switchover(&self, to: &str) -> Result<bool, CoordinationError> {
        self.as_holder(
            "recording the switchover",
            [],
            TxnOp::put(self.key("switchover"), to, None),
        )
        .await
    }

    async fn clear_switchover(&self) -> Result<(), CoordinationError> {
        self.as_holder(
            "removing the switchover record",
            [],
            TxnOp::delete(self.key("switchover"), None),
        )
        .await?;
        Ok(())
    }

    async fn initialize(&self, system_id: &str) -> Result<bool, CoordinationError> {
        let initialize = self.key("initialize");
        self.as_holder(
            "recording the cluster's initialization",
            [Compare::create_revision(
                initialize.as_bytes(),
                CompareOp::Equal,
                0,
            )],
            TxnOp::put(initialize.as_bytes(), system_id.as_bytes(), None),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_parse_with_several_endpoints_and_a_prefix() {
        let l = EtcdLocation::parse("etcd://127.0.0.1:2379,127.0.0.1:2380/prod/pg").unwrap();
        assert_eq!(l.endpoints, ["127.0.0.1:2379", "127.0.0.1:2380"]);
        assert_eq!(l.prefix, "prod/pg");
        assert_eq!(EtcdLocation::parse("etcd://h:1").unwrap().prefix, "walarch");
        assert!(EtcdLocation::parse("http://h:1/x").is_err());
        assert!(EtcdLocation::parse("etcd:///x").is_err());
    }
}
