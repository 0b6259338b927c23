//! The ScheduledBackup reconciler: creates a Backup for each scheduled time that passed since
//! the last one (only the newest when several were missed, as a CronJob does), and comes back
//! at the next. The Backup's name is derived from the scheduled time, so a pass that runs twice
//! for one time creates it once (the second create is a 409).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::resources::{
    Backup, Cluster, OwnerReferencePolicy, ScheduledBackup, ScheduledBackupStatus,
};
use super::{Context, Error, apply_status};

/// The label that ties a Backup to the schedule that created it.
pub const SCHEDULE_LABEL: &str = "walarch.io/scheduled-backup";

/// A six-field schedule (seconds first), read.
pub fn parse(text: &str) -> Result<cron::Schedule, String> {
    if text.split_whitespace().count() != 6 {
        return Err(format!(
            "{text:?} is not a six-field schedule: seconds minutes hours day-of-month month day-of-week, e.g. \"0 0 2 * * *\""
        ));
    }
    cron::Schedule::from_str(text).map_err(|e| format!("{text:?}: {e}"))
}

/// The newest scheduled time in `(after, now]`.
pub fn due(
    schedule: &cron::Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.after(&after).take_while(|t| *t <= now).last()
}

/// The Backup name for the scheduled time `at`.
pub fn backup_name(schedule: &str, at: DateTime<Utc>) -> String {
    format!("{schedule}-{}", at.format("%Y%m%d%H%M%S"))
}

/// One reconciliation of `scheduled`.
pub async fn reconcile(
    scheduled: Arc<ScheduledBackup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = scheduled.namespace().ok_or(Error::NotNamespaced)?;
    let name = scheduled.name_any();
    let now = ctx.now();
    let mut status = scheduled.status.clone().unwrap_or_default();
    status.last_check_time = Some(now.to_rfc3339());
    let schedule = match parse(&scheduled.spec.schedule) {
        Ok(schedule) => schedule,
        Err(why) => {
            ctx.event(&*scheduled, EventType::Warning, "InvalidSchedule", &why)
                .await?;
            status.next_schedule_time = None;
            patch_status(&ctx, &namespace, &name, &status).await?;
            return Ok(Action::await_change());
        }
    };
    if scheduled.spec.suspend {
        status.next_schedule_time = None;
        patch_status(&ctx, &namespace, &name, &status).await?;
        return Ok(Action::await_change());
    }
    let last = status
        .last_schedule_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let created = scheduled
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
        .unwrap_or(now);
    let fire = match last {
        // The first pass of an `immediate` schedule takes one backup at once, named after
        // the schedule's creation: a pass repeated after a lost status write creates no second.
        None if scheduled.spec.immediate => Some(created),
        None => due(&schedule, created, now),
        Some(last) => due(&schedule, last, now),
    };
    if let Some(at) = fire {
        create_backup(&scheduled, &ctx, &namespace, at).await?;
        status.last_schedule_time = Some(at.to_rfc3339());
    }
    let next = schedule.after(&now).next();
    status.next_schedule_time = next.map(|t| t.to_rfc3339());
    patch_status(&ctx, &namespace, &name, &status).await?;
    Ok(match next {
        Some(next) => Action::requeue(
            (next - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1)),
        ),
        None => Action::await_change(),
    })
}

async fn create_backup(
    scheduled: &ScheduledBackup,
    ctx: &Context,
    namespace: &str,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    let cluster = &scheduled.spec.cluster.name;
    let name = backup_name(&scheduled.name_any(), at);
    let mut backup = Backup::for_cluster(&name, cluster);
    backup.spec.method = scheduled.spec.method;
    backup.spec.target = scheduled.spec.target;
    backup.meta_mut().namespace = Some(namespace.to_owned());
    backup
        .meta_mut()
        .labels
        .get_or_insert_default()
        .insert(SCHEDULE_LABEL.into(), scheduled.name_any());
    let owner = match scheduled.spec.backup_owner_reference {
        OwnerReferencePolicy::None => None,
        OwnerReferencePolicy::SelfReference => scheduled.controller_owner_ref(&()),
        OwnerReferencePolicy::Cluster => {
            let clusters: Api<Cluster> = Api::namespaced(ctx.client.clone(), namespace);
            clusters.get(cluster).await?.controller_owner_ref(&())
        }
    };
    backup.meta_mut().owner_references = owner.map(|o| vec![o]);
    let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), namespace);
    match backups.create(&PostParams::default(), &backup).await {
        Ok(_) => {}
        // This time's Backup exists already: an earlier pass created it.
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    ctx.event(
        scheduled,
        EventType::Normal,
        "BackupCreated",
        &format!("Backup {name} for {}", at.to_rfc3339()),
    )
    .await
}

async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &ScheduledBackupStatus,
) -> Result<(), Error> {
    apply_status::<ScheduledBackup>(ctx, namespace, name, super::cluster::MANAGER, status).await
}
