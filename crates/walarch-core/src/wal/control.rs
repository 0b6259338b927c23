//! What walarch reads from `global/pg_control`: the system identifier, which is the first
//! field of `ControlFileData` in every PostgreSQL version, followed by `pg_control_version`;
//! the last checkpoint, which a base backup compares with the one it started from; and the
//! cluster state, which says a restored copy shut down at its recovery target.

use super::{Lsn, SystemId, TimelineId, WalError};

/// `pg_control_version` of PostgreSQL 13 to 16 (1300), 17 (1700) and 18 (1800).
const KNOWN_CONTROL_VERSIONS: [u32; 3] = [1300, 1700, 1800];

/// Reads the system identifier from the bytes of `global/pg_control`.
pub fn system_id_from_pg_control(bytes: &[u8]) -> Result<SystemId, WalError> {
    let invalid = |reason: String| WalError::InvalidControlFile { reason };
    let (Some(id), Some(version)) = (bytes.get(0..8), bytes.get(8..12)) else {
        return Err(invalid(format!("{} bytes is too short", bytes.len())));
    };
    let version = u32::from_le_bytes(version.try_into().unwrap());
    if !KNOWN_CONTROL_VERSIONS.contains(&version) {
        return Err(invalid(format!("unknown pg_control_version {version}")));
    }
    Ok(SystemId::new(u64::from_le_bytes(id.try_into().unwrap())))
}

/// The last checkpoint recorded in `global/pg_control`, as PostgreSQL 13 to 18 lay out the
/// start of `ControlFileData`: `system_identifier` (0), `pg_control_version` (8),
/// `catalog_version_no` (12), `state` (16), `time` (24), `checkPoint` (32), then
/// `checkPointCopy` whose first fields are `redo` (40) and `ThisTimeLineID` (48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlCheckpoint {
    /// The system identifier (`system_identifier`).
    pub system_id: SystemId,
    /// Where the checkpoint record is (`Latest checkpoint location`).
    pub checkpoint: Lsn,
    /// Where its replay starts (`Latest checkpoint's REDO location`).
    pub redo: Lsn,
    /// The checkpoint's timeline (`ThisTimeLineID` of `checkPointCopy`).
    pub timeline: TimelineId,
    /// The cluster's state when the file was written (`state`, `Database cluster state`).
    pub state: ClusterState,
}

/// `DBState`: what `pg_controldata` prints as "Database cluster state". The same values in
/// PostgreSQL 13 to 18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterState {
    /// "starting up"
    StartingUp,
    /// "shut down"
    ShutDown,
    /// "shut down in recovery": a standby or a recovery stopped, e.g. at its target with
    /// `recovery_target_action = shutdown`.
    ShutDownInRecovery,
    /// "shutting down"
    ShuttingDown,
    /// "in crash recovery"
    InCrashRecovery,
    /// "in archive recovery"
    InArchiveRecovery,
    /// "in production"
    InProduction,
    /// A value this version of walarch does not know.
    Unknown(u32),
}

impl ClusterState {
    fn from_raw(raw: u32) -> Self {
        match raw {
            0 => ClusterState::StartingUp,
            1 => ClusterState::ShutDown,
            2 => ClusterState::ShutDownInRecovery,
            3 => ClusterState::ShuttingDown,
            4 => ClusterState::InCrashRecovery,
            5 => ClusterState::InArchiveRecovery,
            6 => ClusterState::InProduction,
            other => ClusterState::Unknown(other),
        }
    }
}

/// Reads the last checkpoint from the bytes of `global/pg_control`, checking the file's
/// CRC-32C first: a read that raced with PostgreSQL rewriting the file is an error, not a
/// wrong answer. The CRC's offset differs between versions; it is the one 4-byte-aligned
/// place where the CRC-32C of everything before it is stored.
pub fn checkpoint_from_pg_control(bytes: &[u8]) -> Result<ControlCheckpoint, WalError> {
    let system_id = system_id_from_pg_control(bytes)?;
    let invalid = |reason: &str| WalError::InvalidControlFile {
        reason: reason.to_owned(),
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let crc_found = (CRC_SEARCH_FROM..=CRC_SEARCH_TO)
        .step_by(4)
        .any(|at| u32_at(at).is_some_and(|stored| stored == crc32c::crc32c(&bytes[..at])));
    if !crc_found {
        return Err(invalid(
            "no valid CRC (damaged, or read while PostgreSQL rewrote it)",
        ));
    }
    let (Some(state), Some(checkpoint), Some(redo), Some(timeline)) =
        (u32_at(16), u64_at(32), u64_at(40), u32_at(48))
    else {
        return Err(invalid("too short for a checkpoint"));
    };
    Ok(ControlCheckpoint {
        system_id,
        checkpoint: Lsn::new(checkpoint),
        redo: Lsn::new(redo),
        timeline: TimelineId::new(timeline)
            .map_err(|_| invalid("timeline 0 in the last checkpoint"))?,
        state: ClusterState::from_raw(state),
    })
}

/// Where `ControlFileData`'s CRC can be: after the checkpoint copy, well before the end of
/// the 8 KiB file (PostgreSQL 15 puts it at 288).
const CRC_SEARCH_FROM: usize = 96;
const CRC_SEARCH_TO: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A pg_control as PostgreSQL 15 writes it (CRC at 288), with the given checkpoint.
    fn control_file(system: u64, checkpoint: u64, redo: u64, timeline: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 8192];
        bytes[0..8].copy_from_slice(&system.to_le_bytes());
        bytes[8..12].copy_from_slice(&1300u32.to_le_bytes());
        bytes[16..20].copy_from_slice(&2u32.to_le_bytes());
        bytes[32..40].copy_from_slice(&checkpoint.to_le_bytes());
        bytes[40..48].copy_from_slice(&redo.to_le_bytes());
        bytes[48..52].copy_from_slice(&timeline.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..288]);
        bytes[288..292].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn reads_the_last_checkpoint_and_checks_the_crc() {
        let bytes = control_file(42, 0x0300_0060, 0x0300_0028, 2);
        let read = checkpoint_from_pg_control(&bytes).unwrap();
        assert_eq!(read.system_id, SystemId::new(42));
        assert_eq!(read.checkpoint, Lsn::new(0x0300_0060));
        assert_eq!(read.redo, Lsn::new(0x0300_0028));
        assert_eq!(read.timeline, TimelineId::new(2).unwrap());
        assert_eq!(read.state, ClusterState::ShutDownInRecovery);
        let mut torn = bytes.clone();
        torn[41] ^= 1;
        assert!(checkpoint_from_pg_control(&torn).is_err());
        assert!(checkpoint_from_pg_control(&bytes[..200]).is_err());
    }

    #[test]
    fn reads_a_real_postgresql_15_pg_control_as_pg_controldata_does() {
        // initdb's pg_control from Debian's PostgreSQL 15; pg_controldata printed system
        // identifier 7642011472967116994, latest checkpoint and REDO location 0/1500718,
        // timeline 1, cluster state "shut down".
        let bytes = include_bytes!("../../tests/fixtures/pg_control_15");
        let read = checkpoint_from_pg_control(bytes).unwrap();
        assert_eq!(read.system_id, SystemId::new(7_642_011_472_967_116_994));
        assert_eq!(read.checkpoint, "0/1500718".parse().unwrap());
        assert_eq!(read.redo, "0/1500718".parse().unwrap());
        assert_eq!(read.timeline, TimelineId::FIRST);
        assert_eq!(read.state, ClusterState::ShutDown);
    }

    #[test]
    fn reads_the_system_identifier() {
        let mut bytes = vec![0u8; 8192];
        bytes[0..8].copy_from_slice(&7_311_234_567_890_123_456u64.to_le_bytes());
        bytes[8..12].copy_from_slice(&1300u32.to_le_bytes());
        assert_eq!(
            system_id_from_pg_control(&bytes).unwrap().get(),
            7_311_234_567_890_123_456
        );
        bytes[8..12].copy_from_slice(&942u32.to_le_bytes());
        assert!(system_id_from_pg_control(&bytes).is_err());
        assert!(system_id_from_pg_control(&bytes[..10]).is_err());
    }
}
