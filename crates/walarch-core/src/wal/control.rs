//! The one field walarch reads from `global/pg_control`: the system identifier, which is the
//! first field of `ControlFileData` in every PostgreSQL version, followed by
//! `pg_control_version`.

use super::{SystemId, WalError};

/// `pg_control_version` of PostgreSQL 13 to 16 (1300) and 17 (1700).
const KNOWN_CONTROL_VERSIONS: [u32; 2] = [1300, 1700];

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

#[cfg(test)]
mod tests {
    use super::*;

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
