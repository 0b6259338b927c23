//! The operator's own use of the engine: a Cluster's repository opened from its spec, the
//! checks a spec must pass before anything is created (a clone never archives into its
//! source), and the recovery plan checked before a recovery cluster gets pods.

use walarch_core::recovery::{self, RecoveryTarget, TargetSpec, TimelineChoice};
use walarch_core::store::{CloudSettings, RepoLocation};
use walarch_core::{CancellationToken, CheckedPlan, Engine, EngineConfig};

use super::resources::{ClusterSpec, RecoverySpec, RecoveryTargetSpec, RepositorySpec};

/// Why a Cluster's spec is refused, before any object is created; `None` when it is sound.
/// The CRD's CEL rules say the same where CEL can; this also covers API servers without CEL
/// and what CEL cannot compare (a repository nested in another one).
pub fn refusal(spec: &ClusterSpec) -> Option<String> {
    if let Some(sync) = spec.synchronous_replicas
        && sync >= spec.instances
    {
        return Some(format!(
            "synchronousReplicas {sync} needs at least {} instances, the spec has {}",
            sync + 1,
            spec.instances
        ));
    }
    if spec.lease.renew_deadline_seconds >= spec.lease.ttl_seconds {
        return Some(format!(
            "lease.renewDeadlineSeconds ({}) must be shorter than lease.ttlSeconds ({})",
            spec.lease.renew_deadline_seconds, spec.lease.ttl_seconds
        ));
    }
    if let Some(repo) = &spec.repository
        && let Err(e) = RepoLocation::parse(&repo.url)
    {
        return Some(format!("spec.repository.url: {e}"));
    }
    let bootstrap = spec.bootstrap.as_ref()?;
    let recovery = match (&bootstrap.initdb, &bootstrap.recovery) {
        (Some(_), Some(_)) => {
            return Some("bootstrap takes exactly one of initdb and recovery".into());
        }
        (_, None) => return None,
        (None, Some(recovery)) => recovery,
    };
    let source = match RepoLocation::parse(&recovery.source.url) {
        Ok(source) => source,
        Err(e) => return Some(format!("spec.bootstrap.recovery.source.url: {e}")),
    };
    if let Err(e) = target_spec(recovery.recovery_target.as_ref()) {
        return Some(format!("spec.bootstrap.recovery.recoveryTarget: {e}"));
    }
    if let Some(repo) = &spec.repository {
        let (a, b) = (&recovery.source, repo);
        let differs = |x: &Option<String>, y: &Option<String>| x.is_some() && y.is_some() && x != y;
        let credentials = |r: &RepositorySpec| r.credentials.as_ref().map(|c| c.name.clone());
        if differs(&credentials(a), &credentials(b))
            || a.s3_endpoint != b.s3_endpoint
            || a.s3_region != b.s3_region
        {
            return Some(
                "a pod has one environment, so the recovery source and spec.repository must use \
                 the same credentials Secret, s3Endpoint and s3Region (different buckets or \
                 prefixes are fine)"
                    .into(),
            );
        }
    }
    if let Some(repo) = &spec.repository
        && let Ok(archive) = RepoLocation::parse(&repo.url)
        && overlap(&source, &archive)
    {
        return Some(format!(
            "a recovery cluster must not archive into its source's repository: {archive} \
             {} {source}; give spec.repository a new location (the source is only read)",
            if archive == source { "is" } else { "overlaps" },
        ));
    }
    None
}

/// Whether two repositories share objects: the same location, or one inside the other.
pub fn overlap(a: &RepoLocation, b: &RepoLocation) -> bool {
    let (a, b) = (a.to_string(), b.to_string());
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// The engine's target for a `recoveryTarget` (none: the end of the archive).
pub fn target_spec(target: Option<&RecoveryTargetSpec>) -> Result<TargetSpec, String> {
    let Some(t) = target else {
        return Ok(TargetSpec::default());
    };
    let given = [
        t.target_time.is_some(),
        t.target_lsn.is_some(),
        t.target_xid.is_some(),
        t.target_name.is_some(),
        t.target_immediate == Some(true),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(
            "give at most one of targetTime, targetLSN, targetXID, targetName, targetImmediate"
                .into(),
        );
    }
    let target = if let Some(time) = &t.target_time {
        RecoveryTarget::Time(recovery::parse_time(time).map_err(|e| e.to_string())?)
    } else if let Some(lsn) = &t.target_lsn {
        RecoveryTarget::Lsn(lsn.parse().map_err(|e| format!("targetLSN {lsn}: {e}"))?)
    } else if let Some(xid) = &t.target_xid {
        RecoveryTarget::Xid(recovery::parse_xid(xid).map_err(|e| e.to_string())?)
    } else if let Some(name) = &t.target_name {
        recovery::check_name(name).map_err(|e| e.to_string())?;
        RecoveryTarget::Name(name.clone())
    } else if t.target_immediate == Some(true) {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    };
    let timeline = match &t.target_tli {
        Some(text) => recovery::parse_timeline(text).map_err(|e| e.to_string())?,
        None => TimelineChoice::Latest,
    };
    Ok(TargetSpec {
        target,
        timeline,
        inclusive: t.exclusive != Some(true),
    })
}

/// Opens `repo` for reading, with the variables of its credentials Secret.
pub fn open(repo: &RepositorySpec, secret_vars: Vec<(String, String)>) -> Result<Engine, String> {
    let location = RepoLocation::parse(&repo.url).map_err(|e| e.to_string())?;
    let mut config = EngineConfig::new(location);
    config.store.s3.endpoint = repo.s3_endpoint.clone();
    config.store.s3.region = repo.s3_region.clone();
    config.store.cloud = CloudSettings::from_vars(secret_vars);
    if let Some(parallelism) = repo.parallelism {
        config.parallelism = parallelism as usize;
    }
    // The operator only reads repositories (plans of a recovery's source): it stores no
    // segment summaries in them.
    config.segment_summaries = false;
    Engine::open(config).map_err(|e| e.to_string())
}

/// Plans the recovery `recovery` asks for, reading its source repository: the error names
/// what is missing (a backup, a segment, a timeline, WAL up to the target).
pub async fn check_recovery(
    recovery: &RecoverySpec,
    secret_vars: Vec<(String, String)>,
) -> Result<CheckedPlan, String> {
    let spec = target_spec(recovery.recovery_target.as_ref())?;
    let backup = match &recovery.backup_id {
        Some(id) => Some(id.parse().map_err(|e| format!("backupId {id}: {e}"))?),
        None => None,
    };
    let engine = open(&recovery.source, secret_vars)?;
    engine
        .plan(&spec, backup.as_ref(), &CancellationToken::new())
        .await
        .map_err(|e| e.to_string())
}

/// One line for a checked plan: the backup and where replay stops.
pub fn describe(plan: &CheckedPlan) -> String {
    let plan = plan.plan();
    format!(
        "recovery to {} from backup {} replays {} WAL segments on timeline {}",
        plan.target, plan.backup.id, plan.wal_segments, plan.target_timeline
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(url: &str) -> RepoLocation {
        RepoLocation::parse(url).unwrap()
    }

    #[test]
    fn repositories_overlap_when_one_holds_the_other() {
        let overlapping = [
            ("s3://b/orders", "s3://b/orders"),
            ("s3://b/orders", "s3://b/orders/"),
            ("s3://b/orders", "s3://b/orders/clone"),
            ("s3://b", "s3://b/orders"),
            ("file:///srv/repo", "file:///srv/repo/clone"),
        ];
        for (a, b) in overlapping {
            assert!(overlap(&location(a), &location(b)), "{a} {b}");
            assert!(overlap(&location(b), &location(a)), "{b} {a}");
        }
        let apart = [
            // A shared beginning of a name is not nesting.
            ("s3://b/orders", "s3://b/orders-clone"),
            ("s3://b/orders", "s3://c/orders"),
            ("s3://b/orders", "gs://b/orders"),
            ("file:///srv/repo", "file:///srv/repo2"),
        ];
        for (a, b) in apart {
            assert!(!overlap(&location(a), &location(b)), "{a} {b}");
        }
    }

    #[test]
    fn targets_read_as_the_engine_takes_them_and_at_most_one_is_given() {
        let spec = target_spec(Some(&RecoveryTargetSpec {
            target_time: Some("2026-11-21T11:32:00Z".into()),
            exclusive: Some(true),
            target_tli: Some("current".into()),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(spec.target, RecoveryTarget::Time(_)));
        assert!(!spec.inclusive);
        assert_eq!(spec.timeline, TimelineChoice::Current);
        assert_eq!(target_spec(None).unwrap(), TargetSpec::default());
        let two = RecoveryTargetSpec {
            target_xid: Some("1234".into()),
            target_name: Some("before-upgrade".into()),
            ..Default::default()
        };
        assert!(target_spec(Some(&two)).unwrap_err().contains("at most one"));
        let no_zone = RecoveryTargetSpec {
            target_time: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(target_spec(Some(&no_zone)).is_err());
    }
}
