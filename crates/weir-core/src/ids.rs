//! Identifiers.

use std::fmt;
use std::str::FromStr;

/// A job's identity: 128 random bits, printed as 32 lower-case hex digits as Flink prints its JobID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct JobId(pub u128);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        JobId(uuid::Uuid::new_v4().as_u128())
    }

    /// The id that `name` stands for, the same in every process and build: the first 128 bits of
    /// the SHA-256 of `weir:` and `name`. An application under high availability takes its id from
    /// the cluster id this way, so that every JobManager of the cluster runs the same application.
    pub fn derived(name: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(b"weir:").chain_update(name.as_bytes()).finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        JobId(u128::from_be_bytes(first))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        if s.len() != 32 {
            return Err(crate::Error::Config(format!("'{s}' is not a job id: expected 32 hex digits")));
        }
        u128::from_str_radix(s, 16)
            .map(JobId)
            .map_err(|_| crate::Error::Config(format!("'{s}' is not a job id: expected 32 hex digits")))
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for JobId {
    type Error = crate::Error;
    fn try_from(s: String) -> crate::Result<Self> {
        s.parse()
    }
}

/// A logical operator's index in its job's plan, stable for a given job and arguments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct VertexId(pub u32);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_as_hex() {
        let id = JobId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<JobId>().ok(), Some(id));
        assert!("xyz".parse::<JobId>().is_err());
        let json = serde_json::to_string(&id).ok();
        assert_eq!(json, Some(format!("\"{text}\"")));
    }

    #[test]
    fn derived_ids_are_stable_and_differ_by_name() {
        assert_eq!(JobId::derived("prod-orders"), JobId::derived("prod-orders"));
        assert_ne!(JobId::derived("prod-orders"), JobId::derived("prod-order"));
        // Fixed across builds (the SHA-256 of `weir:default`, as sha256sum computes it).
        assert_eq!(JobId::derived("default").to_string(), "5cc168ff48da2f5558f986a8f6755a20");
    }
}
